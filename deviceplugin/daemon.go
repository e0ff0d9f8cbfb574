package deviceplugin

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/nvml"
)

// DaemonConfig is everything the node daemon runs with.
type DaemonConfig struct {
	Options
	// MetricsAddr serves /metrics, /healthz and /readyz ("" : not served).
	MetricsAddr       string
	UsageInterval     time.Duration
	ReconcileInterval time.Duration
}

// RunDaemon is the device plugin of one node: it watches the node's pods,
// serves and registers the plugin (again after every kubelet restart),
// publishes the cards on the Node (retrying for publishStartupFor), watches
// card health and GPU memory use, reconciles with the kubelet's
// PodResources API and serves metrics, until ctx ends.
func RunDaemon(ctx context.Context, cfg DaemonConfig, lib nvml.Interface, client kubernetes.Interface) error {
	log := klog.FromContext(ctx)
	node, err := client.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", cfg.NodeName, err)
	}
	if node.Labels[contract.LabelCGPUDisable] == "true" {
		cfg.CGPUDisabled = true
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	cfg.Recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "gpupack-device-plugin", Host: cfg.NodeName})

	pods := NewNodePods(client, cfg.NodeName)
	cfg.Synced = pods.Synced
	p, err := New(cfg.Options, lib, pods, client)
	if err != nil {
		return err
	}
	defer p.close() // Run closes it too; this covers a return before Run
	pods.Start(ctx)
	defer pods.Shutdown()
	if !pods.WaitForSync(ctx) {
		return ctx.Err()
	}
	log.Info("Cards found", "node", cfg.NodeName, "cards", p.Inventory().String(), "unit", cfg.Unit)
	pctx, cancelPublish := context.WithTimeout(ctx, publishStartupFor)
	err = p.publishRetrying(pctx)
	cancelPublish()
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	wg.Go(func() { errc <- p.Run(ctx) })
	if cfg.MetricsAddr != "" {
		wg.Go(func() { errc <- p.ServeStatus(ctx, cfg.MetricsAddr) })
	}
	wg.Go(func() { p.WatchUsage(ctx, cfg.UsageInterval) })
	if cfg.PodResourcesSocket != "" {
		wg.Go(func() { p.WatchPodResources(ctx, cfg.ReconcileInterval) })
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}
