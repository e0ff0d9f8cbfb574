package policy

import (
	"github.com/gpupack/gpupack/contract"
)

// Card is one card as placement sees it. Total and Used are in memory units
// (the cluster's GiB or MiB; the simulator uses thousandths of a card).
type Card struct {
	Index   int
	Model   string
	Total   int64
	Used    int64
	Healthy bool
}

// Free is what is left on the card (never negative, even when a drifted card
// is over-committed).
func (c *Card) Free() int64 {
	if c.Used >= c.Total {
		return 0
	}
	return c.Total - c.Used
}

// Node is one node's GPU state, plus its CPU and memory when they are known.
type Node struct {
	Name  string
	Cards []Card
	// Version changes whenever the node's state does (set by whoever keeps
	// the state); a result computed at one version holds while it is unchanged.
	Version uint64
	// Resources tells whether CPUFree and MemFree, and the allocatable
	// CPUMilli and MemMiB, are known. The extender leaves CPU and memory to
	// kube-scheduler; the simulator checks them here.
	Resources bool
	CPUFree   int64 // millicores
	MemFree   int64 // MiB
	CPUMilli  int64 // millicores
	MemMiB    int64 // MiB
}

// Clone returns a deep copy that placement can change.
func (n *Node) Clone() *Node {
	c := *n
	c.Cards = append([]Card(nil), n.Cards...)
	return &c
}

// Card returns the card with the given (NVML) index, or nil.
func (n *Node) Card(index int) *Card {
	for i := range n.Cards {
		if n.Cards[i].Index == index {
			return &n.Cards[i]
		}
	}
	return nil
}

// Free sums the free memory of the healthy cards.
func (n *Node) Free() int64 {
	var f int64
	for i := range n.Cards {
		if n.Cards[i].Healthy {
			f += n.Cards[i].Free()
		}
	}
	return f
}

// Total sums the memory of the healthy cards.
func (n *Node) Total() int64 {
	var t int64
	for i := range n.Cards {
		if n.Cards[i].Healthy {
			t += n.Cards[i].Total
		}
	}
	return t
}

// Apply adds an allocation to the node's cards. It does not check fit.
func (n *Node) Apply(a contract.Allocation) {
	for idx, u := range a.PerCard() {
		if c := n.Card(idx); c != nil {
			c.Used += u
		}
	}
}

// Request is what one pod asks for.
type Request struct {
	Containers []contract.ContainerRequest
	// Models the pod allows (nil: any).
	Models []string
	// CPU (millicores) and memory (MiB), checked only on nodes whose
	// Resources are known.
	CPUMilli int64
	MemMiB   int64
	// Salt identifies the pod (a hash of its UID; its arrival number in
	// the simulator). Only a PerPod policy reads it: the random policy
	// draws from it, so that each pod draws afresh.
	Salt uint64
}

// shareTotal is the memory the pod's shares ask for (whole cards count 0:
// their size depends on the card).
func (r *Request) shareTotal() int64 {
	var t int64
	for _, c := range r.Containers {
		t += c.Mem
	}
	return t
}

// eligible reports whether a card may hold any share of r.
func (r *Request) eligible(c *Card) bool {
	return c.Healthy && modelAllowed(r.Models, c.Model)
}

// modelAllowed is contract.ModelAllowed with a fast path for the exact
// names that most requests and cards share.
func modelAllowed(allowed []string, model string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		if a == model {
			return true
		}
	}
	return contract.ModelAllowed(allowed, model)
}
