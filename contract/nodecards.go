package contract

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// Where a node's cards were read from (NodeCards.Source).
const (
	// SourceInventory: the gpupack device plugin's AnnotationInventory.
	SourceInventory = "inventory"
	// SourceAllocatable: gpushare's device plugin, allocatable
	// ResourceGPUMem split evenly over allocatable ResourceGPUCount cards.
	SourceAllocatable = "allocatable"
)

// NodeCard is one card of a node, its memory in the cluster's unit.
type NodeCard struct {
	Index int
	// UUID and Model are "" where gpushare's device plugin runs.
	UUID, Model string
	Total       int64
	// Healthy is the inventory's word; gpushare's device plugin publishes
	// no health, so cards read from allocatable are healthy.
	Healthy bool
}

// NodeCards is what a Node says of its cards.
type NodeCards struct {
	// Cards by index; none when the node says nothing usable.
	Cards []NodeCard
	// Source is SourceInventory, SourceAllocatable, or "" (no card).
	Source string
	// Problem says why what the node publishes was not used (a broken
	// inventory, a gpu-mem without gpu-count); "" when nothing was wrong.
	Problem string
}

// CardsOf reads a node's cards, the one rule the extender and
// `kubectl inspect gpushare` share:
//
//  1. the inventory annotation, when it parses and validates: each card as
//     the device plugin measured it (mixed models, health);
//  2. else allocatable ResourceGPUMem split evenly over allocatable
//     ResourceGPUCount cards, both above 0 (gpushare's device plugin, which
//     patches the count in; the remainder of an uneven split is dropped);
//  3. else no card.
//
// A node with gpu-mem but no gpu-count has no card, as it had for
// gpushare's own extender (it made gpu-count devices): the number of cards,
// and so their size, is unknown, and one card of the whole memory would
// take a share that fits no real card. Allocatable, not capacity, is read:
// the kubelet leaves unhealthy devices out of it, so it is what can be
// given.
func CardsOf(node *corev1.Node, unit Unit) NodeCards {
	var out NodeCards
	if s, ok := node.Annotations[AnnotationInventory]; ok {
		inv, err := ParseInventory(s)
		if err == nil {
			for _, c := range inv.Cards {
				out.Cards = append(out.Cards, NodeCard{Index: c.Index, UUID: c.UUID, Model: c.Model, Total: unit.FromMiB(c.MemoryMiB), Healthy: c.Healthy})
			}
			sort.Slice(out.Cards, func(i, j int) bool { return out.Cards[i].Index < out.Cards[j].Index })
			out.Source = SourceInventory
			return out
		}
		out.Problem = err.Error()
	}
	memQ, hasMem := node.Status.Allocatable[ResourceGPUMem]
	countQ, hasCount := node.Status.Allocatable[ResourceGPUCount]
	mem, count := memQ.Value(), countQ.Value()
	switch {
	case !hasMem || mem <= 0:
		return out
	case !hasCount || count <= 0:
		out.addProblem("allocatable " + string(ResourceGPUMem) + " without " + string(ResourceGPUCount) + ": the number of cards is unknown")
		return out
	}
	for i := range count {
		out.Cards = append(out.Cards, NodeCard{Index: int(i), Total: mem / count, Healthy: true})
	}
	out.Source = SourceAllocatable
	return out
}

func (n *NodeCards) addProblem(p string) {
	if n.Problem != "" {
		p = n.Problem + "; " + p
	}
	n.Problem = p
}
