package policy

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/gpupack/gpupack/contract"
)

// searchBudget bounds the backtracking of Place: the number of card choices
// it tries before it gives up and says so (UnfitSearchBudget). Real pods need
// a handful; a pod of many containers that cannot fit together can need
// more, and then its reason says that the search ran out, not that it
// cannot fit.
const searchBudget = 4096

// Decision is a placement of a pod on a node, with the policy's raw score.
type Decision struct {
	Score float64
	// alloc is the placement; a one-card placement is kept as one, so
	// that rating thousands of nodes does not build thousands of maps.
	alloc contract.Allocation
	// one is a one-card placement (a placement of anything else is
	// alloc): the container's and the card's indices, and the units.
	one struct {
		container, card int32
		units           int64
	}
}

// Allocation returns the placement (a new map the caller may keep).
func (d Decision) Allocation() contract.Allocation {
	if d.alloc != nil {
		return d.alloc.Clone()
	}
	return contract.Allocation{int(d.one.container): {int(d.one.card): d.one.units}}
}

// afterPool holds scratch nodes for NodeScore's "after" state.
var afterPool = sync.Pool{New: func() any { return &Node{Cards: make([]Card, 0, 16)} }}

// scoreAfter rates rt.Node with one share added on its Cards[pos] and the
// request's CPU and memory taken, on a pooled copy.
func scoreAfter(rt *Rating, pos int, share int64, p *Policy) float64 {
	n, r := rt.Node, rt.Req
	after := afterPool.Get().(*Node)
	cards := append(after.Cards[:0], n.Cards...)
	*after = *n
	after.Cards = cards
	after.Cards[pos].Used += share
	after.CPUFree -= r.CPUMilli
	after.MemFree -= r.MemMiB
	score := p.NodeScore(rt, after)
	afterPool.Put(after)
	return score
}

// UnfitKind says why a pod does not fit a node.
type UnfitKind int

const (
	// UnfitNoCards: the node has no GPU card at all.
	UnfitNoCards UnfitKind = iota
	// UnfitModel: no healthy card of an allowed model.
	UnfitModel
	// UnfitShare: no card has the free memory one share needs.
	UnfitShare
	// UnfitMultiCard: not enough cards with the per-card share free.
	UnfitMultiCard
	// UnfitWholeCard: not enough whole free cards.
	UnfitWholeCard
	// UnfitTogether: each container fits alone, not all of them at once.
	UnfitTogether
	// UnfitCPU / UnfitMemory: CPU or memory short (known resources only).
	UnfitCPU
	UnfitMemory
	// UnfitSearchBudget: each container fits alone, and the search for a
	// way to place them all ended after searchBudget card choices without
	// one. Unlike UnfitTogether, it does not say that none exists.
	UnfitSearchBudget
)

// Unfit explains why a pod does not fit a node, in numbers.
type Unfit struct {
	Kind UnfitKind
	// Container is the name of the container that does not fit.
	Container string
	// Need and Have: units (share kinds), cards (card kinds), millicores or MiB.
	Need, Have int64
	// Cards is the number of cards the container wants.
	Cards int
	// Models are the allowed models; NodeModels what the node has.
	Models, NodeModels []string
	// Unresolvable is true when the pod would not fit even on the empty,
	// healthy node: no eviction or recovery can help.
	Unresolvable bool
}

// Message is the reason as a user reads it, with memory in unit.
func (u *Unfit) Message(unit contract.Unit) string {
	switch u.Kind {
	case UnfitNoCards:
		return "node has no GPU card (no " + contract.AnnotationInventory + " annotation and no " + string(contract.ResourceGPUMem) + " allocatable)"
	case UnfitModel:
		return fmt.Sprintf("no healthy card of an allowed model (pod allows %s; node has %s)", strings.Join(u.Models, "|"), strings.Join(u.NodeModels, ", "))
	case UnfitShare:
		if u.Have == 0 {
			return fmt.Sprintf("no card has free memory, container %q needs %d %s", u.Container, u.Need, unit)
		}
		return fmt.Sprintf("largest free card has %d %s, container %q needs %d %s", u.Have, unit, u.Container, u.Need, unit)
	case UnfitMultiCard:
		return fmt.Sprintf("container %q needs %d %s on each of %d cards; %d cards have that much free", u.Container, u.Need, unit, u.Cards, u.Have)
	case UnfitWholeCard:
		return fmt.Sprintf("container %q needs %d whole free cards; node has %d", u.Container, u.Need, u.Have)
	case UnfitTogether:
		return fmt.Sprintf("each GPU container fits alone but not all together: pod needs %d %s in all, node has %d %s free", u.Need, unit, u.Have, unit)
	case UnfitCPU:
		return fmt.Sprintf("node has %dm CPU free, pod needs %dm", u.Have, u.Need)
	case UnfitMemory:
		return fmt.Sprintf("node has %d MiB memory free, pod needs %d MiB", u.Have, u.Need)
	case UnfitSearchBudget:
		return fmt.Sprintf("each GPU container fits alone; the search for a way to place them all together stopped after %d card choices without one (pod needs %d %s in all, node has %d %s free): one may exist, and fewer GPU containers are searched in fewer choices", searchBudget, u.Need, unit, u.Have, unit)
	}
	return "does not fit"
}

// Place finds where the pod goes on the node under policy p, and returns
// the decision with p.NodeScore, or why the pod does not fit.
//
// The rule: the containers are placed hardest first (whole cards, then the
// largest per-card share, then the most cards), each a card at a time. A
// share may go to the cards nextShare allows (not already the container's,
// healthy, an allowed model, with room, one of each set of alike cards),
// tried cheapest first (cheaper: the policy's CardCost, then the best fit,
// then the lower position); a dead end backtracks to the next card. The
// first complete placement wins. So a pod that fits in some way is found,
// unless the search runs out of its budget (searchBudget card choices):
// its reason is then UnfitSearchBudget, where UnfitTogether says that no
// way exists. The common pod, one container on one card, takes placeOne's
// fast path: the same rule, without copying the node. Why a pod does not
// fit is found cheapest first: CPU and memory, no cards, each container
// alone (aloneUnfit, the precise reason), then all together.
func Place(n *Node, r *Request, p *Policy, w *Workload) (Decision, *Unfit) {
	return place(n, r, p, w, nil)
}

// place is Place, rating n from the measures kept in m and keeping there
// what it measures (m nil: none kept).
func place(n *Node, r *Request, p *Policy, w *Workload, m *Measures) (Decision, *Unfit) {
	if d, ok := placeOne(n, r, p, w, m); ok {
		return d, nil
	}
	alloc, unfit := search(n, r, p, w)
	if unfit != nil {
		unfit.Unresolvable = neverFits(n, r, p, w)
		return Decision{}, unfit
	}
	after := n.Clone()
	after.Apply(alloc)
	after.CPUFree -= r.CPUMilli
	after.MemFree -= r.MemMiB
	rt := rate(n, r, w, m)
	defer rt.done()
	return Decision{alloc: alloc, Score: p.NodeScore(rt, after)}, nil
}

// placeOne is Place for the common pod: one container on one card. It
// makes the choice search would make first, by the same rule (nextShare,
// then cheaper), without copying the node; ok is false when the pod is not
// of that kind or fits no card, and search then says why.
func placeOne(n *Node, r *Request, p *Policy, w *Workload, m *Measures) (Decision, bool) {
	if len(r.Containers) != 1 || r.Containers[0].Cards() != 1 {
		return Decision{}, false
	}
	if n.Resources && (r.CPUMilli > n.CPUFree || r.MemMiB > n.MemFree) {
		return Decision{}, false
	}
	c := r.Containers[0]
	rt := rate(n, r, w, m)
	defer rt.done()
	best, bestShare := -1, int64(0)
	var bestCost float64
	var bestFree int64
	var rated [16]*Card
	seen := rated[:0]
	whole, perCard := c.Whole(), c.PerCard()
	for i := range n.Cards {
		card := &n.Cards[i]
		share, ok := nextShare(r, card, false, whole, perCard, seen)
		if !ok {
			continue
		}
		seen = append(seen, card)
		cost, free := rt.cardCost(p, i, share), card.Free()-share
		if best < 0 || cheaper(cost, free, bestCost, bestFree) {
			best, bestShare, bestCost, bestFree = i, share, cost, free
		}
	}
	if best < 0 {
		return Decision{}, false
	}
	d := Decision{Score: scoreAfter(rt, best, bestShare, p)}
	if ci, ki := c.Index, n.Cards[best].Index; ci == int(int32(ci)) && ki == int(int32(ki)) {
		d.one.container, d.one.card, d.one.units = int32(ci), int32(ki), bestShare
	} else {
		// An index no card has (a forged inventory may say anything)
		// is kept whole.
		d.alloc = contract.Allocation{ci: {ki: bestShare}}
	}
	return d, true
}

// nextShare is what a container's next share would take on card, and
// whether the card is one to try for it. The checks, in order: the card is
// not one the container already took (taken), it is healthy and of a model
// the pod allows, it has room (for whole cards: it is unused, and the share
// is its size; else its per-card share is free), and no card alike to it is
// in seen (cards of the same model, size and use are interchangeable: the
// first is tried for all). The caller adds a card it tries to seen.
func nextShare(r *Request, card *Card, taken, whole bool, perCard int64, seen []*Card) (int64, bool) {
	if taken || !r.eligible(card) {
		return 0, false
	}
	share, ok := shareOn(card, whole, perCard)
	if !ok || alikeSeen(seen, card) {
		return 0, false
	}
	return share, true
}

// cheaper orders the cards to try for a share: the lower CardCost first,
// then the card left with less free memory (best fit); the caller gives a
// tie to the lower position (the cards' order).
func cheaper(cost float64, freeAfter int64, thanCost float64, thanFreeAfter int64) bool {
	if cost != thanCost {
		return cost < thanCost
	}
	return freeAfter < thanFreeAfter
}

// shareOn is what a container would take on card, and whether it has room:
// the whole card if it is unused (whole), else its per-card share.
func shareOn(card *Card, whole bool, perCard int64) (int64, bool) {
	if whole {
		return card.Total, card.Used == 0
	}
	return perCard, card.Free() >= perCard
}

// alikeSeen reports whether a card of the same model, size and use is in
// seen: such cards are interchangeable, so only the first is tried.
func alikeSeen(seen []*Card, card *Card) bool {
	for _, o := range seen {
		if o.Total == card.Total && o.Used == card.Used && o.Model == card.Model {
			return true
		}
	}
	return false
}

// neverFits reports whether the pod would not fit even on the empty,
// healthy node. One container is judged from the cards' sizes; several are
// searched on an emptied copy, and a search that ran out of its budget
// proves nothing.
func neverFits(n *Node, r *Request, p *Policy, w *Workload) bool {
	if len(r.Containers) != 1 {
		_, u := search(emptied(n), r, p, w)
		return u != nil && u.Kind != UnfitSearchBudget
	}
	c := r.Containers[0]
	big := 0
	for i := range n.Cards {
		card := &n.Cards[i]
		if modelAllowed(r.Models, card.Model) && card.Total >= c.PerCard() {
			big++
		}
	}
	return big < c.Cards()
}

// emptied is n with every card free and healthy, CPU and memory unchecked:
// what could fit there at best once its pods are gone.
func emptied(n *Node) *Node {
	e := n.Clone()
	e.Resources = false
	for i := range e.Cards {
		e.Cards[i].Used = 0
		e.Cards[i].Healthy = true
	}
	return e
}

// search is Place without the fast path (the rule is in Place's comment):
// the first complete placement, or why there is none.
func search(n *Node, r *Request, p *Policy, w *Workload) (contract.Allocation, *Unfit) {
	if n.Resources {
		if r.CPUMilli > n.CPUFree {
			return nil, &Unfit{Kind: UnfitCPU, Need: r.CPUMilli, Have: n.CPUFree}
		}
		if r.MemMiB > n.MemFree {
			return nil, &Unfit{Kind: UnfitMemory, Need: r.MemMiB, Have: n.MemFree}
		}
	}
	if len(r.Containers) == 0 {
		return contract.Allocation{}, nil
	}
	if len(n.Cards) == 0 {
		return nil, &Unfit{Kind: UnfitNoCards}
	}
	// Each container alone first: that gives the precise reason.
	for _, c := range r.Containers {
		if u := aloneUnfit(n, r, c); u != nil {
			return nil, u
		}
	}
	s := searcher{node: n.Clone(), req: r, policy: p, w: w, budget: searchBudget, alloc: contract.Allocation{}}
	s.order = make([]contract.ContainerRequest, len(r.Containers))
	copy(s.order, r.Containers)
	// Hardest first: whole cards, then the largest per-card share, then most cards.
	sort.SliceStable(s.order, func(i, j int) bool {
		a, b := s.order[i], s.order[j]
		if a.Whole() != b.Whole() {
			return a.Whole()
		}
		if a.PerCard() != b.PerCard() {
			return a.PerCard() > b.PerCard()
		}
		return a.Cards() > b.Cards()
	})
	if s.container(0) {
		return s.alloc, nil
	}
	if s.outOfBudget {
		return nil, &Unfit{Kind: UnfitSearchBudget, Need: r.shareTotal(), Have: n.Free()}
	}
	return nil, &Unfit{Kind: UnfitTogether, Need: r.shareTotal(), Have: n.Free()}
}

// aloneUnfit says why container c cannot fit the node even by itself.
func aloneUnfit(n *Node, r *Request, c contract.ContainerRequest) *Unfit {
	var eligible, whole, enough int
	var largest int64
	for i := range n.Cards {
		card := &n.Cards[i]
		if !r.eligible(card) {
			continue
		}
		eligible++
		if card.Used == 0 {
			whole++
		}
		if f := card.Free(); f > largest {
			largest = f
		}
		if !c.Whole() && card.Free() >= c.PerCard() {
			enough++
		}
	}
	switch {
	case eligible == 0:
		models := make([]string, len(n.Cards))
		for i := range n.Cards {
			models[i] = modelName(&n.Cards[i])
		}
		return &Unfit{Kind: UnfitModel, Container: c.Name, Models: modelsOrAny(r.Models), NodeModels: countModels(models)}
	case c.Whole() && whole < c.Cards():
		return &Unfit{Kind: UnfitWholeCard, Container: c.Name, Need: int64(c.Cards()), Have: int64(whole), Cards: c.Cards()}
	case !c.Whole() && c.Cards() == 1 && enough == 0:
		return &Unfit{Kind: UnfitShare, Container: c.Name, Need: c.PerCard(), Have: largest, Cards: 1}
	case !c.Whole() && enough < c.Cards():
		return &Unfit{Kind: UnfitMultiCard, Container: c.Name, Need: c.PerCard(), Have: int64(enough), Cards: c.Cards()}
	}
	return nil
}

func modelName(c *Card) string {
	m := c.Model
	if m == "" {
		m = "unknown model"
	}
	if !c.Healthy {
		m += " (unhealthy)"
	}
	return m
}

func modelsOrAny(m []string) []string {
	if len(m) == 0 {
		return []string{"any"}
	}
	return m
}

// countModels turns [T4 T4 A10] into [2 x T4, 1 x A10], in first-seen order.
func countModels(models []string) []string {
	var order []string
	count := map[string]int{}
	for _, m := range models {
		if count[m] == 0 {
			order = append(order, m)
		}
		count[m]++
	}
	out := make([]string, len(order))
	for i, m := range order {
		out[i] = fmt.Sprintf("%d x %s", count[m], m)
	}
	return out
}

// searcher is the backtracking state of one Place call.
type searcher struct {
	node   *Node // scratch copy, changed as shares are placed
	req    *Request
	policy *Policy
	w      *Workload
	order  []contract.ContainerRequest
	alloc  contract.Allocation
	budget int
	// outOfBudget is set when the budget ended the search with card
	// choices left untried.
	outOfBudget bool
	// failed remembers states that cannot be completed, so that the same
	// cards chosen in another order are not searched again. It is made at
	// the first dead end: a search that never backtracks does not pay for it.
	failed map[string]bool
}

// stateKey identifies the search state: where we are, what every card
// holds, and which cards the current container already took.
func (s *searcher) stateKey(ci, k int, used map[int]int64) string {
	b := make([]byte, 0, 8+len(s.node.Cards)*9)
	b = binary.AppendUvarint(b, uint64(ci))
	b = binary.AppendUvarint(b, uint64(k))
	for i := range s.node.Cards {
		b = binary.AppendVarint(b, s.node.Cards[i].Used)
		if _, ok := used[s.node.Cards[i].Index]; ok {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return string(b)
}

// container places order[ci:] and reports success.
func (s *searcher) container(ci int) bool {
	if ci == len(s.order) {
		return true
	}
	c := s.order[ci]
	s.alloc[c.Index] = map[int]int64{}
	if s.card(ci, c, 0) {
		return true
	}
	delete(s.alloc, c.Index)
	return false
}

// card places the k-th card of container c, then the rest.
func (s *searcher) card(ci int, c contract.ContainerRequest, k int) bool {
	if k == c.Cards() {
		return s.container(ci + 1)
	}
	used := s.alloc[c.Index]
	var key string
	if s.failed != nil {
		key = s.stateKey(ci, k, used)
		if s.failed[key] {
			return false
		}
	}
	for _, i := range s.candidates(c, used) {
		if s.budget <= 0 {
			s.outOfBudget = true
			return false
		}
		s.budget--
		card := &s.node.Cards[i]
		share := c.PerCard()
		if c.Whole() {
			share = card.Total
		}
		card.Used += share
		used[card.Index] = share
		if s.card(ci, c, k+1) {
			return true
		}
		delete(used, card.Index)
		card.Used -= share
	}
	if s.outOfBudget {
		return false // not every way from here was tried: not known to fail
	}
	if s.failed == nil {
		s.failed = map[string]bool{}
	}
	if key == "" {
		key = s.stateKey(ci, k, used)
	}
	s.failed[key] = true
	return false
}

// candidates lists the positions of the cards that can take the next share
// of c (nextShare), cheapest first (cheaper), the lower position on ties.
func (s *searcher) candidates(c contract.ContainerRequest, used map[int]int64) []int {
	type cand struct {
		pos       int
		cost      float64
		freeAfter int64
	}
	var cands []cand
	rt := rate(s.node, s.req, s.w, nil) // the node is unchanged while its cards are rated
	defer rt.done()
	var rated [16]*Card
	seen := rated[:0]
	whole, perCard := c.Whole(), c.PerCard()
	for i := range s.node.Cards {
		card := &s.node.Cards[i]
		_, taken := used[card.Index]
		share, ok := nextShare(s.req, card, taken, whole, perCard, seen)
		if !ok {
			continue
		}
		seen = append(seen, card)
		cands = append(cands, cand{pos: i, cost: s.policy.CardCost(rt, i, share), freeAfter: card.Free() - share})
	}
	sort.SliceStable(cands, func(a, b int) bool {
		return cheaper(cands[a].cost, cands[a].freeAfter, cands[b].cost, cands[b].freeAfter)
	})
	out := make([]int, len(cands))
	for i, c := range cands {
		out[i] = c.pos
	}
	return out
}
