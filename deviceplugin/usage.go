package deviceplugin

import (
	"context"
	"fmt"
	"maps"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/nvml"
)

// Usage is one look at the node: every card, and every GPU container's use
// of each of its cards against its share.
type Usage struct {
	Cards      []CardUsage
	Containers []ContainerUsage
}

// CardUsage is one card.
type CardUsage struct {
	nvml.Device
	Healthy bool
	// Sample is the card's live state; Err is why it could not be read
	// (then Sample is empty).
	Sample nvml.Sample
	Err    error
	// AllocatedMiB is the sum of the shares granted on the card to the
	// node's pods that have not ended.
	AllocatedMiB int64
	// UnattributedMiB is memory of processes that run in no pod of this
	// node (a host daemon, or a pod the informer does not know yet).
	UnattributedMiB int64
}

// ContainerUsage is a GPU container's use of one of its cards.
type ContainerUsage struct {
	Pod       *corev1.Pod
	Container string
	Card      int
	UUID      string
	// UsedMiB is the memory its processes hold on the card; LimitMiB its
	// share there.
	UsedMiB, LimitMiB int64
}

// Over reports whether the container holds more than its share.
func (c ContainerUsage) Over() bool { return c.UsedMiB > c.LimitMiB }

func (c ContainerUsage) String() string {
	return fmt.Sprintf("container %s of pod %s uses %d MiB of card %d (%s), over its share of %d MiB",
		c.Container, klog.KObj(c.Pod), c.UsedMiB, c.Card, c.UUID, c.LimitMiB)
}

// active reports whether a pod may hold GPU memory.
func active(pod *corev1.Pod) bool {
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// share is one container's grant on one card.
type share struct {
	pod       *corev1.Pod
	container int
	card      int
}

// Usage samples every card and attributes each process's memory to the
// container it runs in (PID -> cgroup -> pod and container id).
func (p *Plugin) Usage(ctx context.Context) (*Usage, error) {
	pods, err := p.pods.Cached()
	if err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", p.opts.NodeName, err)
	}
	unitMiB := p.opts.Unit.MiB()
	byUID := map[types.UID]*corev1.Pod{}
	used := map[share]int64{}
	limits := map[share]int64{}
	allocated := map[int]int64{}
	// What containers hold wins over the annotations (which lag a swap of
	// same-size pods until reconciliation).
	h, err := p.holdings.list(ctx, pods)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Grants from annotations only", "err", err)
	}
	for _, pod := range pods {
		if !active(pod) {
			continue
		}
		byUID[pod.UID] = pod
		a, err := contract.ParseAllocation(pod.Annotations[contract.AnnotationAllocation])
		if err != nil {
			a = contract.Allocation{}
		}
		if hs := h[pod.UID]; len(hs) > 0 {
			a = a.Clone()
			maps.Copy(a, hs)
		}
		for ctr, cards := range a {
			for c, units := range cards {
				limits[share{pod, ctr, c}] = units * unitMiB
				allocated[c] += units * unitMiB
			}
		}
	}

	p.mu.Lock()
	u := &Usage{Cards: make([]CardUsage, len(p.cards))}
	for i, c := range p.cards {
		u.Cards[i] = CardUsage{Device: c.Device, Healthy: c.healthy, AllocatedMiB: allocated[c.Index]}
	}
	p.mu.Unlock()

	log := klog.FromContext(ctx)
	for i := range u.Cards {
		cu := &u.Cards[i]
		cu.Sample, cu.Err = p.nvml.Sample(cu.Index)
		for _, proc := range cu.Sample.Processes {
			s, ok := p.attribute(proc.PID, byUID, cu.Index)
			if !ok {
				cu.UnattributedMiB += proc.UsedMiB
				continue
			}
			used[s] += proc.UsedMiB
			if _, granted := limits[s]; !granted {
				// A container on a card it was not granted: its share
				// there is nothing.
				limits[s] = 0
				log.V(2).Info("Process on a card its container was not granted", "pod", klog.KObj(s.pod), "container", s.container, "card", cu.Index, "pid", proc.PID)
			}
		}
	}
	for s, limit := range limits {
		u.Containers = append(u.Containers, ContainerUsage{
			Pod: s.pod, Container: containerName(s.pod, s.container), Card: s.card, UUID: p.uuidOf(s.card),
			UsedMiB: used[s], LimitMiB: limit,
		})
	}
	sort.Slice(u.Containers, func(i, j int) bool {
		a, b := u.Containers[i], u.Containers[j]
		if a.Pod.Namespace != b.Pod.Namespace {
			return a.Pod.Namespace < b.Pod.Namespace
		}
		if a.Pod.Name != b.Pod.Name {
			return a.Pod.Name < b.Pod.Name
		}
		if a.Container != b.Container {
			return a.Container < b.Container
		}
		return a.Card < b.Card
	})
	return u, nil
}

// attribute finds the container a process runs in.
func (p *Plugin) attribute(pid int, byUID map[types.UID]*corev1.Pod, card int) (share, bool) {
	o, err := p.procs.Owner(pid)
	if err != nil {
		return share{}, false
	}
	pod, ok := byUID[o.PodUID]
	if !ok {
		return share{}, false
	}
	if o.ContainerID != "" {
		for _, st := range pod.Status.ContainerStatuses {
			if containerID(st.ContainerID) == o.ContainerID {
				if i := containerIndex(pod, st.Name); i >= 0 {
					return share{pod, i, card}, true
				}
			}
		}
	}
	// The runtime's id is not in the status yet: a pod with one GPU
	// container on this card can only mean that one.
	a, err := contract.ParseAllocation(pod.Annotations[contract.AnnotationAllocation])
	if err != nil {
		return share{}, false
	}
	found := -1
	for ctr, cards := range a {
		if _, ok := cards[card]; ok {
			if found >= 0 {
				return share{}, false
			}
			found = ctr
		}
	}
	if found < 0 {
		return share{}, false
	}
	return share{pod, found, card}, true
}

func containerIndex(pod *corev1.Pod, name string) int {
	for i, c := range pod.Spec.Containers {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func containerName(pod *corev1.Pod, i int) string {
	if i >= 0 && i < len(pod.Spec.Containers) {
		return pod.Spec.Containers[i].Name
	}
	return fmt.Sprintf("#%d", i)
}

func (p *Plugin) uuidOf(index int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.card(index); c != nil {
		return c.UUID
	}
	return ""
}
