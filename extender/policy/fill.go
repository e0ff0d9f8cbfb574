package policy

import "sort"

// Fill is gpupack's own policy, the extender's default: each pod goes where
// it least grows the GPU that the workload could no longer use.
//
// For every shape of the workload (learned from the pods seen so far), a
// node could still take as many pods of that shape as both its cards (room
// per card, models) and its CPU allow; the node's idle GPU beyond what those
// pods would use is unfillable for that shape. The node's unfillable GPU is
// that amount weighted by the shapes' frequencies (a shape limited to some
// card models weighs more as those models are scarcer in the cluster: all
// cards over the cards it may use). Unlike FGD's one-more-pod
// test, it sees GPU stranded by CPU running out, and the leftovers inside
// cards that no number of pods of a shape can use. A node is filled by a mix
// of shapes, not by one: the measure is 0.3 of that average plus 0.7 of the
// idle GPU that even the best-filling common shape (the CPU-fitting shapes
// of one card request, at least 1% of the pods) would leave, so GPU that a
// common shape can still take whole (an empty 8-card node for 8-card pods)
// does not count as lost. The node score is the fall of unfillable GPU plus
// half the fall of FGD's fragmentation (which still says which cards a
// single next pod could not use at all), in cards.
//
// Ties (identical nodes, or a pod that changes neither measure, such as a
// CPU-only pod on a node with room) go to the node left with the least idle
// GPU: the score has no flat tops, so kube-scheduler's random choice among
// equally scored best nodes does not undo the policy's choice.
const Fill Name = "fill"

// fgdShare is how much of FGD's fragmentation fall the fill score adds.
const fgdShare = 0.5

// fillBest is how much of the unfillable GPU is what the best-filling
// common shape would leave (the rest: the frequency-weighted average), and
// fillCommon the least weight of a shape that counts as common.
const (
	fillBest   = 0.7
	fillCommon = 0.01
)

func init() {
	register(&Policy{
		Name:          Fill,
		NeedsWorkload: true,
		// Rare shapes matter here: one 8-card pod that no node can take is
		// as much GPU as ten shared pods.
		Coverage: 0.99,
		// The card that leaves the node's unfillable GPU least.
		CardCost: func(n *Node, i int, share int64, _ *Request, w *Workload) float64 {
			return unfillable(n, w, i, share)
		},
		NodeScore: func(before, after *Node, _ *Request, w *Workload) float64 {
			fall := unfillable(before, w, -1, 0) - unfillable(after, w, -1, 0) +
				fgdShare*(Fragmentation(before, w)-Fragmentation(after, w))
			unit := float64(cardSize(after))
			// The tie-break weighs a whole idle card at a ten-thousandth of a
			// card of fall: below any fall the workload's weights produce.
			return (fall - 1e-4*float64(after.Free())) / unit
		},
	})
}

// fillGroup is the shapes of a workload that ask the same of the cards
// (share, cards, models) and differ in CPU only.
type fillGroup struct {
	share  int64
	cards  int64
	models modelMatch
	// shapes by ascending CPU, and prefix[k] the weight of the first k.
	shapes []int
	prefix []float64
	// scarcity is the cluster's cards over the cards the shapes may use (1
	// without a model limit or without a known capacity).
	scarcity float64
}

// fillGroups groups w's GPU shapes by what they ask of the cards, once.
func (w *Workload) fillGroups() []fillGroup {
	w.groupsOnce.Do(func() {
		at := map[Shape]int{}
		for i := range w.Shapes {
			s := &w.Shapes[i]
			if s.Cards == 0 {
				continue
			}
			key := Shape{Share: s.Share, Cards: s.Cards, Models: s.Models}
			g, ok := at[key]
			if !ok {
				g = len(w.groups)
				at[key] = g
				w.groups = append(w.groups, fillGroup{share: s.Share, cards: int64(s.Cards), models: s.models})
			}
			w.groups[g].shapes = append(w.groups[g].shapes, i)
			w.gpuWeight += s.Weight
		}
		for gi := range w.groups {
			g := &w.groups[gi]
			g.scarcity = scarcity(w.capacity, g.models.allowed)
			sort.SliceStable(g.shapes, func(a, b int) bool { return w.Shapes[g.shapes[a]].CPUMilli < w.Shapes[g.shapes[b]].CPUMilli })
			g.prefix = make([]float64, len(g.shapes)+1)
			for k, si := range g.shapes {
				g.prefix[k+1] = g.prefix[k] + w.Shapes[si].Weight
			}
		}
	})
	return w.groups
}

// unfillable is the node's idle GPU that the workload's GPU shapes could
// not fill, weighted by frequency, with extra units on n.Cards[pos] (pos -1:
// none). A shape's pods on the node are bounded by its cards (room per card
// and model) and its CPU; what those pods would not use of the idle GPU is
// unfillable. Pods without GPU count through the CPU they leave. The result
// blends the weighted average with the least that a common shape leaves
// (fillBest).
func unfillable(n *Node, w *Workload, pos int, extra int64) float64 {
	if w == nil {
		return 0
	}
	var buf [16]cardRun
	runs, idle := cardRuns(n, w, pos, extra, buf[:0])
	if idle == 0 {
		return 0
	}
	groups := w.fillGroups()
	if w.gpuWeight == 0 {
		return 0
	}
	cpu := int64(-1) // unknown: no bound
	if n.Resources {
		cpu = max(n.CPUFree, 0)
	}
	var f float64
	// best: the least idle GPU a common shape would leave.
	best := float64(idle)
	for gi := range groups {
		g := &groups[gi]
		var slots, freeCards, freeUnits int64
		for ri := range runs {
			r := &runs[ri]
			if !g.models.allows(r.model, r.modelIndex) {
				continue
			}
			if g.share > 0 {
				slots += r.count * (r.free / g.share)
			} else if r.free == r.total {
				freeCards += r.count
				freeUnits += r.count * r.free
			}
		}
		var pods, per int64
		if g.share > 0 {
			pods, per = slots/g.cards, g.share*g.cards
		} else if freeCards > 0 {
			pods, per = freeCards/g.cards, freeUnits/freeCards*g.cards
		}
		// The shapes whose CPU lets the node take all those pods (the
		// cheaper ones: they come first) leave the same; the others fewer.
		k := len(g.shapes)
		if cpu >= 0 && pods > 0 {
			k = sort.Search(len(g.shapes), func(j int) bool { return w.Shapes[g.shapes[j]].CPUMilli*pods > cpu })
		}
		left := float64(idle - min(pods*per, idle))
		f += g.scarcity * g.prefix[k] * left
		if k > 0 && g.prefix[k] >= fillCommon {
			best = min(best, left)
		}
		for _, si := range g.shapes[k:] {
			s := &w.Shapes[si]
			p := min(pods, cpu/s.CPUMilli)
			left := float64(idle - min(p*per, idle))
			f += g.scarcity * s.Weight * left
			if s.Weight >= fillCommon {
				best = min(best, left)
			}
		}
	}
	return (1-fillBest)*f/w.gpuWeight + fillBest*best
}

// scarcity is how much rarer the cards a model-limited shape may use are
// than cards at large: all cards over the allowed ones. A room for a pod
// that only a few nodes can take is worth that much more than one any node
// offers.
func scarcity(capacity map[string]int64, models []string) float64 {
	if len(models) == 0 || len(capacity) == 0 {
		return 1
	}
	var all, allowed int64
	for m, n := range capacity {
		all += n
		if modelAllowed(models, m) {
			allowed += n
		}
	}
	if allowed == 0 {
		return 1
	}
	return float64(all) / float64(allowed)
}

// cardRun is a run of alike cards with room: same free units, size and
// model. A node has few distinct cards, so the workload's many shapes walk
// its runs rather than its cards.
type cardRun struct {
	free, total, count int64
	model              string
	modelIndex         int // w.modelOf(model)
}

// cardRuns appends to runs the node's healthy cards with room, with extra
// units used on n.Cards[pos] (pos -1: none), and returns their free units.
func cardRuns(n *Node, w *Workload, pos int, extra int64, runs []cardRun) ([]cardRun, int64) {
	var idle int64
next:
	for i := range n.Cards {
		c := &n.Cards[i]
		if !c.Healthy {
			continue
		}
		free := max(c.Total-usedWith(c, i, pos, extra), 0)
		if free == 0 {
			continue
		}
		idle += free
		for r := range runs {
			if o := &runs[r]; o.free == free && o.total == c.Total && o.model == c.Model {
				o.count++
				continue next
			}
		}
		runs = append(runs, cardRun{free: free, total: c.Total, count: 1, model: c.Model, modelIndex: w.modelOf(c.Model)})
	}
	return runs, idle
}
