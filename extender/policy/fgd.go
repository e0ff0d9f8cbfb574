package policy

import (
	"math"
	"sort"
	"strings"
	"sync"
)

// Shape is one kind of pod in a workload: what FGD measures fragmentation
// against.
type Shape struct {
	// Share is the per-card share in units; 0 with Cards > 0 means whole cards.
	Share int64
	// Cards is the number of cards; 0 for a pod without GPU.
	Cards int
	// Models is the '|'-joined list of allowed models ("" for any).
	Models string
	// CPUMilli is the pod's CPU request.
	CPUMilli int64
}

// ShapeOf is the shape of a request: its largest per-card share over all of
// its cards (whole cards win over shares).
func ShapeOf(r *Request) Shape {
	s := Shape{Models: strings.Join(r.Models, "|"), CPUMilli: r.CPUMilli}
	whole := false
	for _, c := range r.Containers {
		s.Cards += c.Cards()
		if c.Whole() {
			whole = true
		}
		s.Share = max(s.Share, c.PerCard())
	}
	if whole {
		s.Share = 0
	}
	return s
}

// WeightedShape is a shape and its share of the workload.
type WeightedShape struct {
	Shape
	Weight float64
	models modelMatch
}

// Workload is the target workload FGD measures against: the most frequent
// shapes, weighted by frequency. It is immutable once built.
type Workload struct {
	Shapes []WeightedShape
	// The shapes grouped so that fragmentation is computed in one pass over
	// a node's sorted free memory (indices into Shapes): shares on any
	// model by ascending share, whole cards on any model, pods without GPU,
	// and the rest (model constraints), rated over the node's runs of alike
	// cards.
	byShare, whole, noGPU, other []int
	// other grouped by what the shapes ask of the cards (share, cards,
	// models): they differ in CPU only, so the runs are walked once a group.
	otherGroups [][]int
	// capacity is the cluster's nodes by class (nil: unknown), and
	// modelIndex numbers their models.
	capacity   Capacity
	modelIndex map[string]int
	// The GPU shapes grouped for the fill policy, made at first use, and
	// unfillable's sums over them: gpuWeight Σ w_s, fillWeight Σ σ_s·w_s,
	// fillAlpha α = (1-fillBest)·fillWeight/gpuWeight.
	groupsOnce sync.Once
	groups     []fillGroup
	gpuWeight  float64
	fillWeight float64
	fillAlpha  float64
}

// index fills the groups of w.
func (w *Workload) index() {
	for i := range w.Shapes {
		s := &w.Shapes[i]
		switch {
		case len(s.models.allowed) > 0:
			w.other = append(w.other, i)
		case s.Cards == 0:
			w.noGPU = append(w.noGPU, i)
		case s.Share == 0:
			w.whole = append(w.whole, i)
		default:
			w.byShare = append(w.byShare, i)
		}
	}
	sort.SliceStable(w.byShare, func(a, b int) bool { return w.Shapes[w.byShare[a]].Share < w.Shapes[w.byShare[b]].Share })
	at := map[Shape]int{}
	for _, i := range w.other {
		s := &w.Shapes[i]
		key := Shape{Share: s.Share, Cards: s.Cards, Models: s.Models}
		g, ok := at[key]
		if !ok {
			g = len(w.otherGroups)
			at[key] = g
			w.otherGroups = append(w.otherGroups, nil)
		}
		w.otherGroups[g] = append(w.otherGroups[g], i)
	}
}

// NewWorkload keeps the most frequent shapes that together cover coverage
// (0..1] of the pods counted, weighted by their frequency among those kept.
// A coverage outside (0, 1] keeps every shape: 0 is no coverage a workload
// can have, and where a coverage is optional (0: the policy's own), the
// caller resolves it first with Policy.WorkloadCoverage.
func NewWorkload(counts map[Shape]int64, coverage float64) *Workload {
	if !(coverage > 0 && coverage <= 1) {
		coverage = 1
	}
	type sc struct {
		s Shape
		n int64
	}
	var all []sc
	var total int64
	for s, n := range counts {
		if n > 0 {
			all = append(all, sc{s, n})
			total += n
		}
	}
	// Most frequent first; a fixed order on ties so the result is deterministic.
	sort.Slice(all, func(i, j int) bool {
		if all[i].n != all[j].n {
			return all[i].n > all[j].n
		}
		a, b := all[i].s, all[j].s
		if a.Cards != b.Cards {
			return a.Cards < b.Cards
		}
		if a.Share != b.Share {
			return a.Share < b.Share
		}
		if a.CPUMilli != b.CPUMilli {
			return a.CPUMilli < b.CPUMilli
		}
		return a.Models < b.Models
	})
	w := &Workload{}
	var kept int64
	for _, e := range all {
		if float64(kept) >= coverage*float64(total) {
			break
		}
		w.Shapes = append(w.Shapes, WeightedShape{Shape: e.s, Weight: float64(e.n), models: modelMatch{allowed: splitModels(e.s.Models)}})
		kept += e.n
	}
	for i := range w.Shapes {
		w.Shapes[i].Weight /= float64(kept)
	}
	w.index()
	return w
}

// NodeClass is a kind of node as the workload estimate sees it: Cards
// healthy cards of Model, CPUMilli allocatable millicores and MemMiB
// allocatable memory (both 0 where not known). A node with cards of
// several models is one class per model.
type NodeClass struct {
	Model    string
	Cards    int
	CPUMilli int64
	MemMiB   int64
}

// Capacity is the cluster's nodes by class: how many nodes of each.
type Capacity map[NodeClass]int64

// Add counts a node with cards healthy cards of model, cpuMilli allocatable
// millicores and memMiB allocatable memory (0: not known). CPU counts in
// whole cores and memory in whole GiB, rounded down, so that nodes of one
// kind whose allocatable differs by what each kubelet reserves are one
// class (fill's rarity walks the classes).
func (c Capacity) Add(model string, cards int, cpuMilli, memMiB int64) {
	cpu, mem := classResources(cpuMilli, memMiB)
	c[NodeClass{Model: model, Cards: cards, CPUMilli: cpu, MemMiB: mem}]++
}

// classResources rounds a node's CPU down to whole cores and its memory to
// whole GiB, as Capacity.Add counts them.
func classResources(cpuMilli, memMiB int64) (int64, int64) {
	return cpuMilli / 1000 * 1000, memMiB / 1024 * 1024
}

// cards is how many cards the classes that hosts admits have (all: nil).
func (c Capacity) cards(hosts func(NodeClass) bool) int64 {
	var n int64
	for k, count := range c {
		if hosts == nil || hosts(k) {
			n += int64(k.Cards) * count
		}
	}
	return n
}

// SetCapacity tells the workload the cluster's nodes by class, so that a
// shape limited to scarce models weighs more and the commonest kind of node
// is opened first (fill). Call it before the workload is used.
func (w *Workload) SetCapacity(nodes Capacity) {
	w.capacity = nodes
	w.modelIndex = map[string]int{}
	for k := range nodes {
		if _, ok := w.modelIndex[k.Model]; !ok {
			w.modelIndex[k.Model] = len(w.modelIndex)
		}
	}
	for i := range w.Shapes {
		w.Shapes[i].models.learn(w.modelIndex)
	}
}

// modelOf is the index of a card model among the cluster's (-1: unknown).
func (w *Workload) modelOf(model string) int {
	if i, ok := w.modelIndex[model]; ok {
		return i
	}
	return -1
}

// modelMatch tells whether a list of allowed models admits a card's model,
// with the answers for the cluster's models worked out in advance (a node's
// cards are checked against every model-limited shape of the workload).
type modelMatch struct {
	allowed []string
	// ok[i]: whether the cluster's i-th model (Workload.modelOf) is allowed.
	ok []bool
}

// learn works out the answers for the cluster's models.
func (m *modelMatch) learn(index map[string]int) {
	if len(m.allowed) == 0 {
		return
	}
	m.ok = make([]bool, len(index))
	for name, i := range index {
		m.ok[i] = modelAllowed(m.allowed, name)
	}
}

// allows reports whether a model (with its index, -1 if unknown) is
// allowed. It is small enough to inline: it runs for every shape of the
// workload on every card rated.
func (m *modelMatch) allows(model string, index int) bool {
	if len(m.allowed) == 0 {
		return true
	}
	return m.limited(model, index)
}

// limited is allows for a list that limits the models. It is kept out of
// line so that allows itself inlines.
//
//go:noinline
func (m *modelMatch) limited(model string, index int) bool {
	if index >= 0 && index < len(m.ok) {
		return m.ok[index]
	}
	return modelAllowed(m.allowed, model)
}

func splitModels(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "|")
}

// Fragmentation is the node's expected fragmentation under the workload:
// for each shape, weighted by its frequency, the free GPU memory that shape
// cannot use. If the shape cannot run on the node at all (CPU, model, not
// enough cards with room) that is all the free memory; otherwise it is the
// free memory of the cards that could not hold one more of it.
func Fragmentation(n *Node, w *Workload) float64 {
	return fragmentation(n, w, -1, 0)
}

// fragmentation is Fragmentation with extra units used on n.Cards[pos]
// (pos -1: none), so that card choices are rated without copying the node.
//
// Shapes without a model constraint are rated in one pass: with the healthy
// cards' free memory sorted ascending, a share shape needing x per card
// fragments the free memory of the cards below x (a prefix sum) when at
// least Cards cards are at or above x, else all of the idle memory.
func fragmentation(n *Node, w *Workload, pos int, extra int64) float64 {
	if w == nil {
		return 0
	}
	var buf [16]int64
	frees := buf[:0]
	var idle, wholeFree int64
	whole := 0
	for i := range n.Cards {
		c := &n.Cards[i]
		if !c.Healthy {
			continue
		}
		used := usedWith(c, i, pos, extra)
		free := max(c.Total-used, 0)
		frees = append(frees, free)
		idle += free
		if used <= 0 {
			whole++
			wholeFree += free
		}
	}
	for i := 1; i < len(frees); i++ { // insertion sort: a node has few cards
		for j := i; j > 0 && frees[j] < frees[j-1]; j-- {
			frees[j], frees[j-1] = frees[j-1], frees[j]
		}
	}
	cpuShort := func(s *WeightedShape) bool { return n.Resources && n.CPUFree < s.CPUMilli }
	var f float64
	var prefix int64
	j := 0
	for _, si := range w.byShare {
		s := &w.Shapes[si]
		for j < len(frees) && frees[j] < s.Share {
			prefix += frees[j]
			j++
		}
		frag := prefix
		if cpuShort(s) || len(frees)-j < s.Cards {
			frag = idle
		}
		f += s.Weight * float64(frag)
	}
	for _, si := range w.whole {
		s := &w.Shapes[si]
		frag := idle - wholeFree
		if cpuShort(s) || whole < s.Cards {
			frag = idle
		}
		f += s.Weight * float64(frag)
	}
	// A pod without GPU can use none of the idle GPU, whether its CPU fits
	// or not (the paper's XL and XR cases).
	for _, si := range w.noGPU {
		f += w.Shapes[si].Weight * float64(idle)
	}
	var runBuf [16]cardRun
	var runs []cardRun
	if len(w.otherGroups) > 0 {
		runs, _ = cardRuns(n, w, pos, extra, runBuf[:0])
	}
	for _, g := range w.otherGroups {
		frag := runsFragment(runs, idle, &w.Shapes[g[0]])
		for _, si := range g {
			s := &w.Shapes[si]
			if cpuShort(s) {
				f += s.Weight * float64(idle)
			} else {
				f += s.Weight * float64(frag)
			}
		}
	}
	return f
}

// runsFragment is one shape's fragmentation as the cards alone say, CPU
// aside, over the node's runs of alike cards with room (idle is their free
// units): all the idle memory if fewer cards than the shape needs could
// take it (room and model), else the idle memory of the cards that could
// not. Cards without room add nothing to either measure.
func runsFragment(runs []cardRun, idle int64, s *WeightedShape) int64 {
	var frag, fit int64
	for i := range runs {
		r := &runs[i]
		need := s.Share
		if need == 0 { // whole card
			need = r.total
		}
		if r.free >= need && s.models.allows(r.model, r.modelIndex) {
			fit += r.count
		} else {
			frag += r.count * r.free
		}
	}
	if s.Cards == 0 || fit < int64(s.Cards) {
		return idle
	}
	return frag
}

func init() {
	register(&Policy{
		Name:          FGD,
		NeedsWorkload: true,
		// The card whose use leaves the node's score highest: the growth of
		// fragmentation on the same 0..100 scale as the node score.
		CardCost: func(rt *Rating, i int, share int64) float64 {
			return -fgdScore(rt.fragmentation()-fragmentation(rt.Node, rt.W, i, share), rt.cardSize())
		},
		// FGD's gradient step as the paper's scheduler scores it: the fall
		// of the node's fragmentation, in cards, through a sigmoid onto
		// 0..100, truncated to a whole score (so that nodes within a few
		// hundredths of a card tie, and ties go to a node at random).
		NodeScore: func(rt *Rating, after *Node) float64 {
			return fgdScore(rt.fragmentation()-Fragmentation(after, rt.W), rt.cardSize())
		},
	})
}

// fgdScore maps a fall of fragmentation (in units, of cards of size unit)
// to the paper's whole score: floor(100 * sigmoid(fall / unit)).
func fgdScore(fall float64, unit int64) float64 {
	if unit <= 0 {
		unit = 1
	}
	return math.Floor(100 / (1 + math.Exp(-fall/float64(unit))))
}

// cardSize is the mean size of the node's healthy cards (1 if none): what
// a "card" of fragmentation is on this node.
func cardSize(n *Node) int64 {
	var total int64
	cards := 0
	for i := range n.Cards {
		if n.Cards[i].Healthy {
			total += n.Cards[i].Total
			cards++
		}
	}
	if cards == 0 || total < int64(cards) {
		return 1
	}
	return total / int64(cards)
}

// usedWith is what card c (at position i) holds once extra units are added
// at position pos.
func usedWith(c *Card, i, pos int, extra int64) int64 {
	if i == pos {
		return c.Used + extra
	}
	return c.Used
}
