package cache

import (
	"sort"

	"github.com/gpupack/gpupack/contract"
)

// NodeInfo is one node as /inspect shows it.
type NodeInfo struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	// Source of the card list: contract.SourceInventory (gpupack device
	// plugin), contract.SourceAllocatable (gpushare device plugin), or ""
	// (no card).
	Source string `json:"source"`
	// Problem says why what the node publishes of its cards was not used
	// (contract.CardsOf), if it was not.
	Problem   string     `json:"problem,omitempty"`
	Exists    bool       `json:"exists"`
	Total     int64      `json:"total"`
	Allocated int64      `json:"allocated"`
	Cards     []CardInfo `json:"cards"`
	// Unplaced pods hold memory on the node but fit no card of it.
	Unplaced []PodShare `json:"unplaced,omitempty"`
}

// CardInfo is one card.
type CardInfo struct {
	Index     int        `json:"index"`
	UUID      string     `json:"uuid,omitempty"`
	Model     string     `json:"model,omitempty"`
	Healthy   bool       `json:"healthy"`
	Total     int64      `json:"total"`
	Allocated int64      `json:"allocated"`
	Pods      []PodShare `json:"pods,omitempty"`
}

// PodShare is what one container of a pod holds on a card.
type PodShare struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	Container int    `json:"container"`
	Units     int64  `json:"units"`
	Trust     Trust  `json:"trust"`
	Bound     bool   `json:"bound"`
}

// Inspect returns the named node, or every GPU node when name is empty,
// sorted by name. A GPU node is one with cards or with GPU pods.
func (c *Cache) Inspect(name string) []NodeInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []NodeInfo
	for n, ns := range c.nodes {
		if name != "" && n != name {
			continue
		}
		ni := ns.info()
		if name == "" && len(ni.Cards) == 0 && len(ni.Unplaced) == 0 {
			continue
		}
		out = append(out, ni)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (ns *nodeState) info() NodeInfo {
	ni := NodeInfo{Name: ns.pn.Name, Address: ns.address, Source: ns.source, Problem: ns.problem, Exists: ns.exists}
	pos := map[int]int{}
	for i, c := range ns.pn.Cards {
		pos[c.Index] = i
		ni.Cards = append(ni.Cards, CardInfo{Index: c.Index, UUID: ns.uuids[c.Index], Model: c.Model, Healthy: c.Healthy, Total: c.Total, Allocated: c.Used})
		ni.Total += c.Total
		ni.Allocated += c.Used
	}
	for _, ps := range sortedPods(ns) {
		if ps.state == unplaced {
			for _, cr := range ps.req.Containers {
				ni.Unplaced = append(ni.Unplaced, share(ps, cr.Index, cr.Mem))
			}
			continue
		}
		for ctr, cards := range ps.alloc {
			for card, u := range cards {
				if i, ok := pos[card]; ok {
					ni.Cards[i].Pods = append(ni.Cards[i].Pods, share(ps, ctr, u))
				}
			}
		}
	}
	return ni
}

func share(ps *podState, container int, units int64) PodShare {
	return PodShare{Namespace: ps.namespace, Name: ps.name, UID: string(ps.uid), Container: container, Units: units, Trust: ps.state.trust(), Bound: ps.state != binding}
}

func sortedPods(ns *nodeState) []*podState {
	out := make([]*podState, 0, len(ns.pods))
	for _, ps := range ns.pods {
		if len(ps.req.Containers) > 0 {
			out = append(out, ps)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].namespace != out[j].namespace {
			return out[i].namespace < out[j].namespace
		}
		return out[i].name < out[j].name
	})
	return out
}

// CardUsage is one card's totals, for metrics.
type CardUsage struct {
	Node, UUID, Model string
	Index             int
	Total, Allocated  int64
	Healthy           bool
}

// Usage lists every card of every existing node.
func (c *Cache) Usage() []CardUsage {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []CardUsage
	for _, ns := range c.nodes {
		if !ns.exists {
			continue
		}
		for _, card := range ns.pn.Cards {
			out = append(out, CardUsage{Node: ns.pn.Name, UUID: ns.uuids[card.Index], Model: card.Model, Index: card.Index, Total: card.Total, Allocated: card.Used, Healthy: card.Healthy})
		}
	}
	return out
}

// UnitBytes is the size of one memory unit in bytes.
func UnitBytes(u contract.Unit) int64 { return u.MiB() << 20 }
