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

// This file is the matching of Allocate: which plans wait, given what
// containers hold (the words are those of the package doc).

// PodSource lists the pods bound to this node.
type PodSource interface {
	// Cached lists from the informer (may lag the API server).
	Cached() ([]*corev1.Pod, error)
	// Live lists from the API server.
	Live(ctx context.Context) ([]*corev1.Pod, error)
}

// plan is the plan of one GPU container.
type plan struct {
	pod       *corev1.Pod
	container int           // index in the pod's spec
	cards     map[int]int64 // card index -> units
	// podPlan is the plans of every GPU container of the pod.
	podPlan contract.Allocation
	assumed int64 // bind time, ns
}

func (pl plan) units() int64 {
	var u int64
	for _, v := range pl.cards {
		u += v
	}
	return u
}

func (pl plan) String() string {
	return fmt.Sprintf("%s container %d (%s)", klog.KObj(pl.pod), pl.container, describeCards(pl.cards))
}

// owner is the container the extender made the plan for.
func (pl plan) owner() podContainer { return podContainer{pl.pod.UID, pl.container} }

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

// inPlay reports whether a pod's plans count on the node: it has not ended
// and is not being deleted. What waits and what is held are worked out
// over the same pods, so a deleting pod's devices never use up another
// pod's plan.
func inPlay(pod *corev1.Pod) bool {
	return active(pod) && pod.DeletionTimestamp == nil
}

// plans lists the node's plans, held or waiting, oldest bind first.
func plans(pods []*corev1.Pod) []plan {
	var out []plan
	for _, pod := range pods {
		if !inPlay(pod) {
			continue
		}
		a, err := contract.ParseAllocation(planOf(pod))
		if err != nil {
			continue
		}
		assumed, _ := strconv.ParseInt(pod.Annotations[contract.AnnotationAssumeTime], 10, 64)
		for ctr, cards := range a {
			out = append(out, plan{pod: pod, container: ctr, cards: maps.Clone(cards), podPlan: a, assumed: assumed})
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

// planOf is the pod's plans as the extender wrote them: the allocation
// annotation, or gpupack.io/planned-allocation once reconciliation
// rewrote the allocation.
func planOf(pod *corev1.Pod) string {
	if p, ok := pod.Annotations[contract.AnnotationPlanned]; ok {
		return p
	}
	return pod.Annotations[contract.AnnotationAllocation]
}

// holdings says what the GPU containers of the node's pods hold. It is the
// kubelet's word (podResourcesHoldings) or, on a node without the
// kubelet's PodResources API, what this plugin remembers serving
// (servedHoldings).
type holdings interface {
	// list says what each GPU container of the pods in play holds.
	list(ctx context.Context, pods []*corev1.Pod) (held, error)
	// served is told that Allocate served a container from pl.
	served(ctx context.Context, pl plan)
}

// podContainer names a container of a pod by its index in the pod's spec.
type podContainer struct {
	uid   types.UID
	index int
}

// held is what each GPU container of the node holds: pod UID -> container
// index -> card -> units.
type held map[types.UID]map[int]map[int]int64

func (h held) add(c podContainer, cards map[int]int64) {
	if h[c.uid] == nil {
		h[c.uid] = map[int]map[int]int64{}
	}
	h[c.uid][c.index] = cards
}

func (h held) holds(c podContainer) bool {
	_, ok := h[c.uid][c.index]
	return ok
}

// holder is a container that holds devices, and what they name.
type holder struct {
	podContainer
	cards map[int]int64
}

// holders lists the containers that hold devices, by pod UID then index.
func (h held) holders() []holder {
	var out []holder
	for uid, ctrs := range h {
		for ctr, cards := range ctrs {
			out = append(out, holder{podContainer{uid, ctr}, cards})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].uid != out[j].uid {
			return out[i].uid < out[j].uid
		}
		return out[i].index < out[j].index
	})
	return out
}

// waitingPlans is what waits for Allocate: the node's plans (oldest bind
// first) less one plan for each container that holds devices.
//
// The kubelet never says which pod an Allocate is for, so a container may
// hold a plan the extender made for another pod of the same size. The plan
// a holding container takes off is, by the first rule that gives one:
//
//  1. its own plan, when it holds exactly that;
//  2. the oldest plan equal to what it holds among the plans of containers
//     that hold other cards than their own plan (they swapped plans);
//  3. the oldest plan equal to what it holds among the plans of containers
//     that hold nothing yet (it was served from that plan; that container
//     now waits on what is left);
//  4. its own plan, if it has one: no plan left equals what it holds, and
//     its pod has drifted.
//
// Every holder goes through rule 1, then those left through rule 2, then
// rule 3, holders in order of pod UID and container index. So same-size
// pods that swapped plans leave the right cards waiting, whichever pod each
// plan was made for; and every holder but a drifted one takes off a plan
// equal to what it holds, so the node's plans, counted together, cover
// what is held: counting plans never under-counts a card.
func waitingPlans(plans []plan, h held) (waiting []plan, drifted map[types.UID]bool) {
	taken := make([]bool, len(plans))
	own := make(map[podContainer]int, len(plans)) // container -> index of its plan
	for i, pl := range plans {
		own[pl.owner()] = i
	}

	// Rule 1.
	var left []holder
	for _, hd := range h.holders() {
		if i, ok := own[hd.podContainer]; ok && maps.Equal(plans[i].cards, hd.cards) {
			taken[i] = true
			continue
		}
		left = append(left, hd)
	}

	// Rules 2 and 3: each holder left takes the oldest plan not taken yet
	// that equals what it holds, among the plans the rule allows.
	byRule := func(left []holder, allowed func(plan) bool) (still []holder) {
		for _, hd := range left {
			found := false
			for i, pl := range plans {
				if !taken[i] && allowed(pl) && maps.Equal(pl.cards, hd.cards) {
					taken[i], found = true, true
					break
				}
			}
			if !found {
				still = append(still, hd)
			}
		}
		return still
	}
	holdsOther := map[podContainer]bool{}
	for _, hd := range left {
		holdsOther[hd.podContainer] = true
	}
	left = byRule(left, func(pl plan) bool { return holdsOther[pl.owner()] })
	left = byRule(left, func(pl plan) bool { return !h.holds(pl.owner()) })

	// Rule 4.
	drifted = map[types.UID]bool{}
	for _, hd := range left {
		drifted[hd.uid] = true
		if i, ok := own[hd.podContainer]; ok {
			taken[i] = true
		}
	}

	for i, pl := range plans {
		if !taken[i] {
			waiting = append(waiting, pl)
		}
	}
	return waiting, drifted
}

// match finds the first waiting plan whose cards are exactly got.
func match(waiting []plan, got map[int]int64) (plan, bool) {
	for _, pl := range waiting {
		if maps.Equal(pl.cards, got) {
			return pl, true
		}
	}
	return plan{}, false
}
