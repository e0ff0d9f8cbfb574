package deviceplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

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
// allocation.
const ReasonAllocationCorrected = "GPUAllocationCorrected"

// holdings asks the kubelet which fake devices each GPU container of the
// node's pods holds.
func (p *Plugin) holdings(ctx context.Context, pods []*corev1.Pod) (held, error) {
	if p.podResources == nil {
		return nil, errors.New("no PodResources socket is configured")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := p.podResources.List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("asking the kubelet's PodResources API what containers hold: %w", err)
	}
	byName := make(map[types.NamespacedName]*corev1.Pod, len(pods))
	for _, pod := range pods {
		byName[types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}] = pod
	}
	h := held{}
	for _, pr := range resp.GetPodResources() {
		pod := byName[types.NamespacedName{Namespace: pr.GetNamespace(), Name: pr.GetName()}]
		if pod == nil || !planned(pod) {
			continue
		}
		for _, c := range pr.GetContainers() {
			idx := containerIndex(pod, c.GetName())
			if idx < 0 {
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
			cards, err := PerCard(ids, p.byUUID)
			if err != nil {
				return nil, fmt.Errorf("pod %s container %s: %w", klog.KObj(pod), c.GetName(), err)
			}
			if h[pod.UID] == nil {
				h[pod.UID] = map[int]map[int]int64{}
			}
			h[pod.UID][idx] = cards
		}
	}
	return h, nil
}

// Reconcile makes the pods' annotations say what the kubelet's PodResources
// API says their containers hold, and marks assigned the pods whose GPU
// containers all hold devices.
//
// The kubelet does not say which pod an Allocate is for, so two waiting
// pods of the same size can swap cards: P is served from the plan recorded
// for Q, and Q later from P's (see pool). While such a Q still waits, the
// recorded plans are left alone: as a whole they still name the right
// cards (the extender's per-card totals are right), and P's old plan is
// what steers Q. Once nothing waits on a plan another container took, each
// holder's allocation is rewritten to the truth; the plan is kept in
// gpupack.io/planned-allocation, so that what waits is worked out from the
// same plans while the rewrites land one pod at a time. A pod that holds
// another pod's plan keeps the extender's signature, which covers its plan:
// the node's signed plans, as a whole, name exactly the cards that are held,
// so an extender that rebuilds its state between two of the rewrites still
// counts every card right. A pod that holds cards no plan names (the
// kubelet gave them without this plugin, as after a node reboot) loses the
// signature: the extender then checks its record instead of trusting its
// plan. Each rewrite gets a GPUAllocationCorrected event.
func (p *Plugin) Reconcile(ctx context.Context) error {
	pods, err := p.pods.Cached()
	if err != nil {
		return fmt.Errorf("listing the pods of node %s: %w", p.opts.NodeName, err)
	}
	h, err := p.holdings(ctx, pods)
	if err != nil {
		return err
	}
	all := plans(pods)
	rest, drifted := pool(all, h)
	waiting := map[types.UID]map[int]bool{}
	for _, w := range rest {
		if waiting[w.pod.UID] == nil {
			waiting[w.pod.UID] = map[int]bool{}
		}
		waiting[w.pod.UID][w.container] = true
	}
	settled := true // no container waits on a plan another took
	for _, w := range all {
		if !h.holds(w.pod.UID, w.container) && !waiting[w.pod.UID][w.container] {
			settled = false
			break
		}
	}
	log := klog.FromContext(ctx)
	for _, w := range all {
		if w.container != firstContainer(w.podAlloc) {
			continue // one pass per pod
		}
		rec, err := contract.ParseAllocation(w.pod.Annotations[contract.AnnotationAllocation])
		if err != nil {
			rec = w.podAlloc
		}
		if settled {
			rec = w.podAlloc.Clone()
			for ctr, cards := range h[w.pod.UID] {
				rec[ctr] = maps.Clone(cards)
			}
		}
		if err := p.patchRecord(ctx, w.pod, rec, h[w.pod.UID], drifted[w.pod.UID]); err != nil {
			log.Error(err, "Reconciling a pod's allocation", "pod", klog.KObj(w.pod))
		}
	}
	return nil
}

func firstContainer(a contract.Allocation) int {
	first := -1
	for ctr := range a {
		if first < 0 || ctr < first {
			first = ctr
		}
	}
	return first
}

// patchRecord writes a pod's allocation when it changed (keeping the
// extender's plan, and its signature unless the pod drifted off every plan)
// and whether every GPU container holds devices.
func (p *Plugin) patchRecord(ctx context.Context, pod *corev1.Pod, rec contract.Allocation, holds map[int]map[int]int64, drifted bool) error {
	annotations := map[string]any{}
	old := pod.Annotations[contract.AnnotationAllocation]
	if _, signed := pod.Annotations[contract.AnnotationSignature]; signed && drifted {
		annotations[contract.AnnotationSignature] = nil // what it holds is no decision of the extender's
	}
	if cur, err := contract.ParseAllocation(old); err != nil || cur.String() != rec.String() {
		annotations[contract.AnnotationAllocation] = rec.String()
		if _, kept := pod.Annotations[contract.AnnotationPlanned]; !kept {
			// Verbatim: the extender's signature covers these bytes.
			annotations[contract.AnnotationPlanned] = planOf(pod)
		}
		if cards := rec.Cards(); len(cards) > 0 {
			annotations[contract.AnnotationIndex] = strconv.Itoa(cards[0])
		}
		klog.FromContext(ctx).Info("Allocation annotation corrected to what the kubelet gave", "pod", klog.KObj(pod), "recorded", old, "now", rec.String())
		p.event(pod, corev1.EventTypeWarning, ReasonAllocationCorrected,
			"The kubelet gave this node's containers other devices than recorded: allocation %s corrected to %s", old, rec)
	}
	assigned := "true"
	for ctr := range rec {
		if _, ok := holds[ctr]; !ok {
			assigned = "false"
		}
	}
	if pod.Annotations[contract.AnnotationAssigned] != assigned || len(annotations) > 0 {
		annotations[contract.AnnotationAssigned] = assigned
	}
	if len(annotations) == 0 || p.client == nil {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID, "annotations": annotations}})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := p.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// WatchPodResources reconciles every interval, and soon after each
// Allocate, until ctx ends.
func (p *Plugin) WatchPodResources(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := p.Reconcile(ctx); err != nil {
			klog.FromContext(ctx).V(2).Info("PodResources reconciliation skipped", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
			// Let the kubelet record the devices it just allocated.
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}
