package deviceplugin

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
)

// PodSource lists the pods bound to this node.
type PodSource interface {
	// Cached lists from the informer (may lag the API server).
	Cached() ([]*corev1.Pod, error)
	// Live lists from the API server.
	Live(ctx context.Context) ([]*corev1.Pod, error)
}

// waiting is a GPU container of a bound pod that has not been allocated yet.
type waiting struct {
	pod *corev1.Pod
	// podAlloc is the pod's whole recorded allocation.
	podAlloc  contract.Allocation
	container int
	cards     map[int]int64 // card index -> units
	assumed   int64         // bind time, ns
}

func (w waiting) units() int64 {
	var u int64
	for _, v := range w.cards {
		u += v
	}
	return u
}

func (w waiting) String() string {
	return fmt.Sprintf("%s container %d (%s)", klog.KObj(w.pod), w.container, describeCards(w.cards))
}

func describeCards(cards map[int]int64) string {
	idx := make([]int, 0, len(cards))
	for c := range cards {
		idx = append(idx, c)
	}
	sort.Ints(idx)
	parts := make([]string, len(idx))
	for i, c := range idx {
		parts[i] = fmt.Sprintf("card %d: %d", c, cards[c])
	}
	return strings.Join(parts, ", ")
}

// planned reports whether a pod's plan counts on the node: it has not
// ended and is not being deleted. What waits and what is held are worked
// out over the same pods, so a deleting pod's devices never use up another
// pod's plan.
func planned(pod *corev1.Pod) bool {
	return active(pod) && pod.DeletionTimestamp == nil
}

// waitingContainers lists the GPU containers of pods that wait for
// Allocate, oldest bind first. done says which containers the plugin has
// served already; with it (no PodResources API), pods marked assigned are
// taken as served too (a restarted plugin). With done nil it lists every
// plan.
func waitingContainers(pods []*corev1.Pod, done map[types.UID]map[int]bool) []waiting {
	var out []waiting
	for _, pod := range pods {
		if !planned(pod) {
			continue
		}
		if _, known := done[pod.UID]; done != nil && !known && pod.Annotations[contract.AnnotationAssigned] == "true" {
			continue
		}
		a, err := contract.ParseAllocation(planOf(pod))
		if err != nil {
			continue
		}
		assumed, _ := strconv.ParseInt(pod.Annotations[contract.AnnotationAssumeTime], 10, 64)
		for ctr, cards := range a {
			if done[pod.UID][ctr] {
				continue
			}
			out = append(out, waiting{pod: pod, podAlloc: a, container: ctr, cards: maps.Clone(cards), assumed: assumed})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].assumed != out[j].assumed {
			return out[i].assumed < out[j].assumed
		}
		if out[i].pod.UID != out[j].pod.UID {
			return out[i].pod.UID < out[j].pod.UID
		}
		return out[i].container < out[j].container
	})
	return out
}

// planOf is the extender's decision for a pod: the allocation annotation,
// or the original decision kept when reconciliation rewrote it.
func planOf(pod *corev1.Pod) string {
	if p, ok := pod.Annotations[contract.AnnotationPlanned]; ok {
		return p
	}
	return pod.Annotations[contract.AnnotationAllocation]
}

// match finds the first waiting container whose cards are exactly got.
func match(ws []waiting, got map[int]int64) (waiting, bool) {
	for _, w := range ws {
		if maps.Equal(w.cards, got) {
			return w, true
		}
	}
	return waiting{}, false
}

// held is what the kubelet says each GPU container of the node holds: pod
// UID -> container index -> card -> units.
type held map[types.UID]map[int]map[int]int64

func (h held) holds(uid types.UID, ctr int) bool {
	_, ok := h[uid][ctr]
	return ok
}

// plans lists every GPU container's recorded allocation on the node's
// active pods, served or not, oldest bind first.
func plans(pods []*corev1.Pod) []waiting {
	return waitingContainers(pods, nil)
}

// pool is what still waits for Allocate, given what containers hold: the
// recorded allocations (plans) less one plan per holding container. A
// container's own plan goes when it holds exactly that; else an unused
// plan equal to what it holds (it was served from another pod's plan: the
// pods are interchangeable), first one of another holder that holds other
// cards than planned (the two swapped), then one of a container that holds
// nothing yet; else its own plan (the kubelet gave it other cards than any
// plan). So same-size pods that swapped cards leave the right cards
// waiting, whichever pod each plan was recorded on.
//
// drifted names the pods with a container that holds cards equal to no
// plan (the kubelet gave it devices the plugin never served, as after a
// node reboot or a card swap). Every other holder holds a plan, so the
// node's plans, as a multiset, still cover what is held: counting the
// plans never under-counts a card.
func pool(all []waiting, h held) (rest []waiting, drifted map[types.UID]bool) {
	used := make([]bool, len(all))
	own := map[types.UID]map[int]int{}
	for i, w := range all {
		if own[w.pod.UID] == nil {
			own[w.pod.UID] = map[int]int{}
		}
		own[w.pod.UID][w.container] = i
	}
	type holder struct {
		uid   types.UID
		ctr   int
		cards map[int]int64
	}
	var pending []holder
	for uid, ctrs := range h {
		for ctr, cards := range ctrs {
			if i, ok := own[uid][ctr]; ok && maps.Equal(all[i].cards, cards) {
				used[i] = true
				continue
			}
			pending = append(pending, holder{uid, ctr, cards})
		}
	}
	sort.Slice(pending, func(i, j int) bool {
		if pending[i].uid != pending[j].uid {
			return pending[i].uid < pending[j].uid
		}
		return pending[i].ctr < pending[j].ctr
	})
	// Mutual swaps first: a holder's cards recorded on another holder whose
	// own plan is not what it holds; then plans of containers that hold
	// nothing yet.
	pendingHolder := map[types.UID]map[int]bool{}
	for _, hd := range pending {
		if pendingHolder[hd.uid] == nil {
			pendingHolder[hd.uid] = map[int]bool{}
		}
		pendingHolder[hd.uid][hd.ctr] = true
	}
	var unmatched []holder
	for _, fromHolders := range []bool{true, false} {
		unmatched = unmatched[:0]
		for _, hd := range pending {
			found := false
			for i, w := range all {
				eligible := pendingHolder[w.pod.UID][w.container]
				if !fromHolders {
					eligible = !h.holds(w.pod.UID, w.container)
				}
				if !used[i] && eligible && maps.Equal(w.cards, hd.cards) {
					used[i], found = true, true
					break
				}
			}
			if !found {
				unmatched = append(unmatched, hd)
			}
		}
		pending = append([]holder(nil), unmatched...)
	}
	drifted = map[types.UID]bool{}
	for _, hd := range unmatched {
		drifted[hd.uid] = true
		if i, ok := own[hd.uid][hd.ctr]; ok && !used[i] {
			used[i] = true
		}
	}
	for i, w := range all {
		if !used[i] {
			rest = append(rest, w)
		}
	}
	return rest, drifted
}
