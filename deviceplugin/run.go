package deviceplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fsnotify/fsnotify"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
)

// Run serves the plugin and registers it with the kubelet; whenever the
// kubelet restarts (it recreates kubelet.sock, and removes plugin sockets),
// the plugin serves and registers again. It watches card health and keeps
// the node's inventory and gpu-count current. It returns when ctx ends,
// and closes the plugin's connection to the kubelet's PodResources API
// then: a plugin runs once.
func (p *Plugin) Run(ctx context.Context) error {
	defer p.close()
	log := klog.FromContext(ctx)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", p.opts.Dir, err)
	}
	defer w.Close()
	if err := w.Add(p.opts.Dir); err != nil {
		return fmt.Errorf("watching %s: %w", p.opts.Dir, err)
	}
	healthCtx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	go func() {
		if err := p.WatchHealth(healthCtx); err != nil {
			log.Error(err, "Card health is not watched")
		}
	}()
	kubelet := filepath.Base(pluginapi.KubeletSocket)
	for {
		l, err := p.listen()
		if err != nil {
			return err
		}
		sctx, stop := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- p.serve(sctx, l) }()
		if err := p.registerRetrying(sctx); err != nil {
			log.Error(err, "Registration failed; waiting for the kubelet to restart")
		} else {
			p.registered.Store(true)
			p.metrics.registrations.Inc()
			log.Info("Registered with the kubelet", "resource", contract.ResourceGPUMem, "socket", SocketName)
		}
		restart := false
		for !restart {
			select {
			case <-ctx.Done():
				stop()
				<-served
				return nil
			case err := <-served:
				stop()
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("serving the device plugin: %w", err)
			case ev := <-w.Events:
				if filepath.Base(ev.Name) == kubelet && ev.Has(fsnotify.Create) {
					log.Info("The kubelet restarted: serving and registering again")
					p.registered.Store(false)
					restart = true
				}
			case err := <-w.Errors:
				log.Error(err, "Watching the device-plugins folder")
			}
		}
		stop()
		<-served
	}
}

// registerRetryFor is how long registration is retried: the kubelet may
// still be starting.
const registerRetryFor = 10 * time.Second

// registerRetryEvery paces the registration attempts.
const registerRetryEvery = 200 * time.Millisecond

// registerRetrying registers, retrying every registerRetryEvery for
// registerRetryFor; it returns the last registration error when that time
// runs out, ctx's when ctx ends.
func (p *Plugin) registerRetrying(ctx context.Context) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, registerRetryEvery, registerRetryFor, true, func(ctx context.Context) (bool, error) {
		last = p.Register(ctx)
		return last == nil, nil
	})
	if err != nil && last != nil && ctx.Err() == nil {
		return last
	}
	return err
}

// PublishNode writes the card inventory annotation and the gpupack.io/gpu.*
// labels (nodeLabels) on the node in one patch, and aliyun.com/gpu-count
// (all cards) into its status capacity and allocatable, so the extender
// sizes each card and sees its health, and pods can select the node by
// its cards.
func (p *Plugin) PublishNode(ctx context.Context) error {
	if p.client == nil {
		return nil
	}
	inv := p.Inventory()
	sys, err := p.nvml.System()
	if err != nil {
		// The labels NVML could not give are removed; the rest is published.
		klog.FromContext(ctx).Error(err, "Reading the driver's versions for the node's labels", "node", p.opts.NodeName)
	}
	meta, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{contract.AnnotationInventory: inv.String()},
		"labels":      nodeLabels(inv.Cards, sys),
	}})
	if _, err := p.client.CoreV1().Nodes().Patch(ctx, p.opts.NodeName, types.MergePatchType, meta, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("writing the inventory and labels of node %s: %w", p.opts.NodeName, err)
	}
	n := strconv.Itoa(len(inv.Cards))
	st, _ := json.Marshal(map[string]any{"status": map[string]any{
		"capacity":    map[string]string{string(contract.ResourceGPUCount): n},
		"allocatable": map[string]string{string(contract.ResourceGPUCount): n},
	}})
	if _, err := p.client.CoreV1().Nodes().Patch(ctx, p.opts.NodeName, types.MergePatchType, st, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("writing %s of node %s: %w", contract.ResourceGPUCount, p.opts.NodeName, err)
	}
	return nil
}
