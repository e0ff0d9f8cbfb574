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

// waitingContainers lists the GPU containers of pods that wait for
// Allocate, oldest bind first. done says which containers the plugin has
// served already.
func waitingContainers(pods []*corev1.Pod, done map[types.UID]map[int]bool) []waiting {
	var out []waiting
	for _, pod := range pods {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.DeletionTimestamp != nil {
			continue
		}
		if pod.Annotations[contract.AnnotationAssigned] == "true" {
			continue
		}
		a, err := contract.ParseAllocation(pod.Annotations[contract.AnnotationAllocation])
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

// match finds the first waiting container whose cards are exactly got.
func match(ws []waiting, got map[int]int64) (waiting, bool) {
	for _, w := range ws {
		if maps.Equal(w.cards, got) {
			return w, true
		}
	}
	return waiting{}, false
}
