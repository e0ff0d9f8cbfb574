package deviceplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
)

// DefaultPodResourcesSocket is the kubelet's PodResources API.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// ReasonAllocationCorrected is the event when reconciliation rewrote a pod's
// allocation.
const ReasonAllocationCorrected = "GPUAllocationCorrected"

// Reconcile makes the pods' allocation annotations say what their
// containers hold, and marks assigned the pods whose GPU containers all
// hold devices. RunDaemon runs it only with the kubelet's PodResources API:
// what the plugin remembers serving is the plans, which the annotations
// already say.
//
// The kubelet does not say which pod an Allocate is for, so two waiting
// pods of the same size can swap plans: P is served from Q's plan, and Q
// later from P's (see waitingPlans). While such a Q still waits, the
// allocations are left alone: together they still name the right cards
// (the extender's per-card totals are right), and P's plan is what steers
// Q. Once no container waits on a plan another container took, each
// holder's allocation is rewritten to what it holds; the plan is kept in
// gpupack.io/planned-allocation, so that what waits is worked out from the
// same plans while the rewrites land one pod at a time. A pod that holds
// another pod's plan keeps the extender's signature, which covers its own
// plan: the node's signed plans, together, name exactly the cards that are
// held, so an extender that rebuilds its state between two of the rewrites
// still counts every card right. A pod that has drifted loses the
// signature: the extender then checks its record instead of trusting its
// plan. Each rewrite gets a GPUAllocationCorrected event.
func (p *Plugin) Reconcile(ctx context.Context) error {
	pods, err := p.pods.Cached()
	if err != nil {
		return fmt.Errorf("listing the pods of node %s: %w", p.opts.NodeName, err)
	}
	h, err := p.holdings.list(ctx, pods)
	if err != nil {
		return err
	}
	all := plans(pods)
	rest, drifted := waitingPlans(all, h)
	waiting := map[podContainer]bool{}
	for _, pl := range rest {
		waiting[pl.owner()] = true
	}
	settled := true // no container waits on a plan another took
	for _, pl := range all {
		if !h.holds(pl.owner()) && !waiting[pl.owner()] {
			settled = false
			break
		}
	}
	log := klog.FromContext(ctx)
	for _, pl := range all {
		if pl.container != firstContainer(pl.podPlan) {
			continue // one pass per pod
		}
		alloc, err := contract.ParseAllocation(pl.pod.Annotations[contract.AnnotationAllocation])
		if err != nil {
			alloc = pl.podPlan
		}
		if settled {
			alloc = pl.podPlan.Clone()
			for ctr, cards := range h[pl.pod.UID] {
				alloc[ctr] = maps.Clone(cards)
			}
		}
		if err := p.patchAllocation(ctx, pl.pod, alloc, h[pl.pod.UID], drifted[pl.pod.UID]); err != nil {
			log.Error(err, "Reconciling a pod's allocation", "pod", klog.KObj(pl.pod))
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

// patchAllocation writes a pod's allocation annotation when it changed
// (keeping the plan, and its signature unless the pod has drifted) and
// whether every GPU container holds devices.
func (p *Plugin) patchAllocation(ctx context.Context, pod *corev1.Pod, alloc contract.Allocation, holds map[int]map[int]int64, drifted bool) error {
	annotations := map[string]any{}
	old := pod.Annotations[contract.AnnotationAllocation]
	if _, signed := pod.Annotations[contract.AnnotationSignature]; signed && drifted {
		annotations[contract.AnnotationSignature] = nil // what it holds is no decision of the extender's
	}
	if cur, err := contract.ParseAllocation(old); err != nil || cur.String() != alloc.String() {
		annotations[contract.AnnotationAllocation] = alloc.String()
		if _, kept := pod.Annotations[contract.AnnotationPlanned]; !kept {
			// Verbatim: the extender's signature covers these bytes.
			annotations[contract.AnnotationPlanned] = planOf(pod)
		}
		if cards := alloc.Cards(); len(cards) > 0 {
			annotations[contract.AnnotationIndex] = strconv.Itoa(cards[0])
		}
		klog.FromContext(ctx).Info("Allocation annotation corrected to what the kubelet gave", "pod", klog.KObj(pod), "recorded", old, "now", alloc.String())
		p.event(pod, corev1.EventTypeWarning, ReasonAllocationCorrected,
			"The kubelet gave this node's containers other devices than recorded: allocation %s corrected to %s", old, alloc)
	}
	assigned := "true"
	for ctr := range alloc {
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
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
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
