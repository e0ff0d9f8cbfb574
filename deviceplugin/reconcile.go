package deviceplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpupack/gpupack/contract"
)

// DefaultPodResourcesSocket is the kubelet's PodResources API.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// ReasonAllocationCorrected is the event when reconciliation rewrote a pod's
// allocation to what its containers really got.
const ReasonAllocationCorrected = "GPUAllocationCorrected"

// Reconcile asks the kubelet (PodResources API on socket) which fake
// devices each container of the node really holds and makes the pods'
// annotations say so:
//   - a created container whose devices differ from its recorded allocation
//     gets the real one (the extender's signature is dropped, so the
//     extender re-checks the claim instead of trusting it) and an event;
//   - a pod whose GPU containers were all created is marked assigned;
//   - the plugin forgets nothing it served and learns what a previous run
//     of the plugin served.
//
// Only containers the runtime has created are considered: their Allocate
// is over, so reconciliation never races one in flight.
func (p *Plugin) Reconcile(ctx context.Context, socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to the kubelet's PodResources API at %s: %w", socket, err)
	}
	defer conn.Close()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := podresourcesapi.NewPodResourcesListerClient(conn).List(lctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return fmt.Errorf("listing pod resources from the kubelet at %s: %w", socket, err)
	}
	pods, err := p.pods.Cached()
	if err != nil {
		return fmt.Errorf("listing the pods of node %s: %w", p.opts.NodeName, err)
	}
	byName := make(map[types.NamespacedName]*corev1.Pod, len(pods))
	for _, pod := range pods {
		byName[types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}] = pod
	}
	for _, pr := range resp.GetPodResources() {
		pod := byName[types.NamespacedName{Namespace: pr.GetNamespace(), Name: pr.GetName()}]
		if pod == nil || !active(pod) {
			continue
		}
		real, err := p.held(pod, pr)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Reading what the kubelet gave a pod", "pod", klog.KObj(pod))
			continue
		}
		if len(real) == 0 {
			continue
		}
		if err := p.reconcilePod(ctx, pod, real); err != nil {
			klog.FromContext(ctx).Error(err, "Reconciling a pod's allocation", "pod", klog.KObj(pod))
		}
	}
	return nil
}

// held is what the created GPU containers of a pod hold, by container index.
func (p *Plugin) held(pod *corev1.Pod, pr *podresourcesapi.PodResources) (contract.Allocation, error) {
	created := map[string]bool{}
	for _, st := range pod.Status.ContainerStatuses {
		created[st.Name] = st.ContainerID != ""
	}
	real := contract.Allocation{}
	for _, c := range pr.GetContainers() {
		idx := containerIndex(pod, c.GetName())
		if idx < 0 || !created[c.GetName()] {
			continue
		}
		var ids []string
		for _, d := range c.GetDevices() {
			if d.GetResourceName() == string(contract.ResourceGPUMem) {
				ids = append(ids, d.GetDeviceIds()...)
			}
		}
		if len(ids) == 0 {
			continue
		}
		cards, err := perCard(ids, p.byUUID)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.GetName(), err)
		}
		real[idx] = cards
	}
	return real, nil
}

func (p *Plugin) reconcilePod(ctx context.Context, pod *corev1.Pod, real contract.Allocation) error {
	p.mu.Lock()
	if p.done[pod.UID] == nil {
		p.done[pod.UID] = map[int]bool{}
	}
	for idx := range real {
		p.done[pod.UID][idx] = true
	}
	p.mu.Unlock()

	recorded, err := contract.ParseAllocation(pod.Annotations[contract.AnnotationAllocation])
	if err != nil {
		recorded = contract.Allocation{}
	}
	annotations := map[string]any{}
	fixed := recorded.Clone()
	for idx, cards := range real {
		if !maps.Equal(recorded[idx], cards) {
			fixed[idx] = cards
		}
	}
	if fixed.String() != recorded.String() {
		annotations[contract.AnnotationAllocation] = fixed.String()
		annotations[contract.AnnotationSignature] = nil // no longer the extender's decision
		if cards := fixed.Cards(); len(cards) > 0 {
			annotations[contract.AnnotationIndex] = strconv.Itoa(cards[0])
		}
		klog.FromContext(ctx).Info("Allocation annotation corrected to what the kubelet gave", "pod", klog.KObj(pod), "recorded", recorded.String(), "real", fixed.String())
		p.event(pod, corev1.EventTypeWarning, ReasonAllocationCorrected,
			"The kubelet gave this pod's containers %s, not the recorded %s: annotation corrected", fixed, recorded)
	}
	all := true
	for idx := range fixed {
		if _, ok := real[idx]; !ok {
			all = false
		}
	}
	if all && pod.Annotations[contract.AnnotationAssigned] != "true" {
		annotations[contract.AnnotationAssigned] = "true"
	}
	if len(annotations) == 0 || p.client == nil {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID, "annotations": annotations}})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = p.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// WatchPodResources reconciles every interval until ctx ends.
func (p *Plugin) WatchPodResources(ctx context.Context, socket string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := p.Reconcile(ctx, socket); err != nil {
			klog.FromContext(ctx).V(2).Info("PodResources reconciliation skipped", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
