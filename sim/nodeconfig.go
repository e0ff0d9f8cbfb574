package sim

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"
)

// nodeConfigs is one node type's nodes in the bound's program: the shapes
// that fit the type, and the configurations of one node generated so far.
//
// A configuration is how many pods of each shape one node holds, such that
// they fit it: its cards (each card's shares within the card, whole-card
// pods on cards of their own), its CPU and its memory. w_t_j is how many of
// the type's nodes hold configuration j, and the rows say:
//
//   - nodes: Σ_j w_t_j ≤ N_t;
//   - for each shape s: x_ts ≤ Σ_j a_js·w_t_j, where a_js is configuration
//     j's pods of s.
//
// Every placement gives such w (each node has the configuration it holds),
// so the rows keep the program a relaxation. They say what the sums over a
// type's nodes cannot: that a node's CPU and memory are its own, so pods
// that need more of them than one node has beside the others cannot fill
// its cards, however much other nodes of the type have left.
//
// The configurations are too many to write down; price generates them
// (see there for how the program still bounds when it stops).
//
// The bound (solveBound) does without them: on the default workload,
// seed 42, the program with them, its columns generated for 121 rounds,
// had an optimum of 6,019,095.6 thousandths of a card, where without them
// it has 6,019,120 (3.105% unallocated): the rows move the optimum by at
// most 25 thousandths, and pricing them through a relaxation left a
// Lagrangian term that loosened the bound instead. What they are for is
// ProgramPacking: each generated configuration fits a node, so whole
// numbers of them are a placement.
type nodeConfigs struct {
	t           int   // the type's index, in the columns' names
	count       int64 // the type's nodes
	cards       int   // cards per node
	cpu, memory int64 // per node
	grid        int64 // millicores per CPU step, in price
	steps       int64 // the node's CPU in steps, rounded down
	unit        int64 // thousandths of a card per GPU step: the shares' gcd
	// shapes are the shapes that fit the type, as the rows list them.
	shapes []nodeShape
	// The configurations generated so far: pods per shape.
	configSet
	row int // 0-based number of the nodes row in the last text; the shapes' rows follow
}

// nodeShape is a shape in a type's node rows.
type nodeShape struct {
	*shape
	si   int   // the shape's index: its column is x_t_si
	size int64 // for shares: GPU steps per share
	// steps is the CPU steps of a pod (whole cards) or of one of its
	// shares, rounded down.
	steps int64
}

// cpuSteps is how many steps of a node's CPU price counts in.
const cpuSteps = 512

func newNodeConfigs(ti int, t *nodeType) *nodeConfigs {
	grid := max(1, (t.cpu+cpuSteps-1)/cpuSteps)
	return &nodeConfigs{
		t: ti, count: t.count, cards: t.cards, cpu: t.cpu, memory: t.memory,
		grid: grid, steps: t.cpu / grid, unit: CardUnits,
	}
}

// shapeAt is the position in c.shapes of the shape of index si (-1: the
// shape fits no node of the type).
func (c *nodeConfigs) shapeAt(si int) int {
	return slices.IndexFunc(c.shapes, func(s nodeShape) bool { return s.si == si })
}

// whole tells whether the shape's pods take whole cards.
func (s *nodeShape) whole() bool { return s.milli >= CardUnits }

// add puts shape s (index si), which fits the type, in the type's rows.
func (c *nodeConfigs) add(s *shape, si int) {
	ns := nodeShape{shape: s, si: si}
	if ns.whole() {
		ns.steps = s.cpu / c.grid
	} else {
		ns.steps = s.cpu / s.cards / c.grid
		c.unit = gcd(c.unit, s.milli)
	}
	c.shapes = append(c.shapes, ns)
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// seed starts the configurations: for each shape, a node of as many of
// its pods as fit it, when one does.
func (c *nodeConfigs) seed() {
	for i := range c.shapes {
		s := &c.shapes[i]
		s.size = s.milli / c.unit
		pods := int64(c.cards) / s.cards
		if !s.whole() {
			pods = int64(c.cards) * (CardUnits / s.milli) / s.cards
		}
		if s.cpu > 0 {
			pods = min(pods, c.cpu/s.cpu)
		}
		if s.memory > 0 {
			pods = min(pods, c.memory/s.memory)
		}
		if pods > 0 {
			a := make([]int64, len(c.shapes))
			a[i] = pods
			c.keep(a)
		}
	}
}

// writeRows writes the type's rows, numbering them from row, and returns
// the next number.
func (c *nodeConfigs) writeRows(w *bytes.Buffer, row int) int {
	c.row = row
	fmt.Fprintf(w, " n%d:", c.t)
	for j := range c.configs {
		fmt.Fprintf(w, " + 1 w_%d_%d", c.t, j)
	}
	fmt.Fprintf(w, " <= %d\n", c.count)
	for i, s := range c.shapes {
		fmt.Fprintf(w, " n%d_%d: + 1 x_%d_%d", c.t, i, c.t, s.si)
		for j, a := range c.configs {
			if a[i] > 0 {
				fmt.Fprintf(w, " - %d w_%d_%d", a[i], c.t, j)
			}
		}
		w.WriteString(" <= 0\n")
	}
	return row + 1 + len(c.shapes)
}

// rhoSearches is how many multipliers price tries, besides 0.
const rhoSearches = 10

// price adds, when it finds one, a configuration of positive reduced cost
// under the duals of the last solve (indexed by row): its pods' duals
// summed, less the nodes row's. It returns an upper bound on the largest
// reduced cost of any configuration, and whether it added one.
//
// The bound comes from a relaxation solved exactly by dynamic programming
// (best): memory is priced by a multiplier ρ ≥ 0 (each pod's dual less ρ
// times its memory, plus ρ times the node's memory: whatever fits the
// node's memory gains from that), CPU is counted in whole steps of grid
// millicores, rounded down, against the node's own rounded down (whatever
// fits a node fits so counted: the sum of rounded parts is at most the
// rounded sum), a pod of several shares counts as that many pods of one
// share each, of its CPU and memory over its shares, and a node may hold
// more pods of a shape than there are. Each relaxes what a node holds, so
// every ρ bounds the largest reduced cost from above; price tries ρ = 0
// and a golden-section search for the least bound (the bound is convex in
// ρ). The relaxation's best configurations are made to fit (fit) and added
// when they then gain.
func (c *nodeConfigs) price(duals []float64) (float64, bool) {
	value := make([]float64, len(c.shapes))
	var hi float64 // beyond it, no pod is worth its memory
	for i := range c.shapes {
		s := &c.shapes[i]
		value[i] = duals[c.row+1+i]
		if value[i] > 0 && s.memory > 0 {
			hi = max(hi, value[i]/float64(s.memory))
		}
	}
	mu := duals[c.row]
	bound := math.Inf(1)
	var best []int64
	bestRC := priceEpsilon
	try := func(rho float64) float64 {
		v, a := c.best(value, rho)
		ub := v + rho*float64(c.memory) - mu
		bound = min(bound, ub)
		if a = c.fit(a, value); a != nil {
			if rc := dot(a, value) - mu; rc > bestRC {
				best, bestRC = a, rc
			}
		}
		return ub
	}
	try(0)
	if hi > 0 {
		// Golden-section search over [0, hi].
		const g = 0.6180339887498949
		lo, up := 0.0, hi
		x1, x2 := up-g*(up-lo), lo+g*(up-lo)
		f1, f2 := try(x1), try(x2)
		for range rhoSearches - 2 {
			if f1 <= f2 {
				up, x2, f2 = x2, x1, f1
				x1 = up - g*(up-lo)
				f1 = try(x1)
			} else {
				lo, x1, f1 = x1, x2, f2
				x2 = lo + g*(up-lo)
				f2 = try(x2)
			}
		}
	}
	added := best != nil && c.keep(best)
	return bound, added
}

func dot(a []int64, v []float64) float64 {
	var s float64
	for i, n := range a {
		s += float64(n) * v[i]
	}
	return s
}

// best is the most a configuration of the relaxation is worth, each pod of
// shape i worth value[i] - rho·(its memory), and such a configuration
// (pods per shape, rounded up for pods of several shares). Two dynamic
// programs: the most one card's shares are worth within each CPU budget
// (an unbounded knapsack over the card's GPU steps and the CPU steps),
// then the most a node's cards are worth within its CPU, card by card, a
// card holding shares or whole-card pods taking cards of their own.
func (c *nodeConfigs) best(value []float64, rho float64) (float64, []int64) {
	cpu := int(c.steps)
	gpu := int(CardUnits / c.unit)
	width := cpu + 1
	worth := make([]float64, len(c.shapes))
	var shares, wholes []int
	for i := range c.shapes {
		s := &c.shapes[i]
		worth[i] = value[i] - rho*float64(s.memory)
		if worth[i] <= 0 {
			continue
		}
		if s.whole() {
			wholes = append(wholes, i)
		} else {
			worth[i] /= float64(s.cards)
			shares = append(shares, i)
		}
	}
	// card[g*width+b]: the most shares on one card are worth within g GPU
	// steps and b CPU steps; cardTook says how (-1: as with one GPU step
	// fewer, -2: one CPU step fewer, -3: nothing, else the share taken
	// last).
	card := make([]float64, (gpu+1)*width)
	cardTook := make([]int32, len(card))
	for g := 0; g <= gpu; g++ {
		for b := 0; b <= cpu; b++ {
			at := g*width + b
			best, took := 0.0, int32(-3)
			if g > 0 && card[at-width] > best {
				best, took = card[at-width], -1
			}
			if b > 0 && card[at-1] > best {
				best, took = card[at-1], -2
			}
			for _, i := range shares {
				s := &c.shapes[i]
				if int(s.size) > g || int(s.steps) > b {
					continue
				}
				if v := card[at-int(s.size)*width-int(s.steps)] + worth[i]; v > best {
					best, took = v, int32(i)
				}
			}
			card[at], cardTook[at] = best, took
		}
	}
	full := card[gpu*width:]
	// node[k*width+b]: the most k cards are worth within b CPU steps;
	// nodeTook says how (-1: one CPU step fewer; -2-b': a card of shares
	// within b' steps, b' ≥ 0; else the whole-card shape taken last).
	node := make([]float64, (c.cards+1)*width)
	nodeTook := make([]int32, len(node))
	for k := 1; k <= c.cards; k++ {
		for b := 0; b <= cpu; b++ {
			at := k*width + b
			best, took := node[at-width]+full[0], int32(-2)
			if b > 0 && node[at-1] > best {
				best, took = node[at-1], -1
			}
			for bb := 1; bb <= b; bb++ {
				if v := node[at-width-bb] + full[bb]; v > best {
					best, took = v, int32(-2-bb)
				}
			}
			for _, i := range wholes {
				s := &c.shapes[i]
				if int(s.cards) > k || int(s.steps) > b {
					continue
				}
				if v := node[(k-int(s.cards))*width+b-int(s.steps)] + worth[i]; v > best {
					best, took = v, int32(i)
				}
			}
			node[at], nodeTook[at] = best, took
		}
	}
	shareCount := make([]int64, len(c.shapes))
	a := make([]int64, len(c.shapes))
	for k, b := c.cards, cpu; k > 0; {
		switch took := nodeTook[k*width+b]; {
		case took == -1:
			b--
		case took <= -2:
			bb := int(-2 - took)
			for g, cb := gpu, bb; g > 0 || cb > 0; {
				switch t := cardTook[g*width+cb]; {
				case t == -1:
					g--
				case t == -2:
					cb--
				case t == -3:
					g, cb = 0, 0
				default:
					shareCount[t]++
					g -= int(c.shapes[t].size)
					cb -= int(c.shapes[t].steps)
				}
			}
			k, b = k-1, b-bb
		default:
			a[took]++
			k -= int(c.shapes[took].cards)
			b -= int(c.shapes[took].steps)
		}
	}
	for i, n := range shareCount {
		if n > 0 {
			a[i] = (n + c.shapes[i].cards - 1) / c.shapes[i].cards
		}
	}
	return node[c.cards*width+cpu], a
}

// fit is configuration a made to fit one node, pods of the least value
// taken out first until it does (nil: nothing worth keeping is left).
func (c *nodeConfigs) fit(a []int64, value []float64) []int64 {
	a = slices.Clone(a)
	order := make([]int, 0, len(a))
	for i, n := range a {
		if n > 0 {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(x, y int) int { return cmp.Compare(value[x], value[y]) })
	for _, i := range order {
		for a[i] > 0 && !c.fits(a) {
			a[i]--
		}
		if c.fits(a) {
			break
		}
	}
	if !slices.ContainsFunc(a, func(n int64) bool { return n > 0 }) {
		return nil
	}
	return a
}

// fits tells whether configuration a fits one node of the type (pack).
func (c *nodeConfigs) fits(a []int64) bool {
	_, ok := c.pack(a)
	return ok
}

// pack places configuration a on one node of the type, and tells whether
// it fits: its CPU, its memory, and its cards, the whole-card pods on cards
// of their own and the pods of shares placed first fit, largest share
// first, each share of a pod on a card of its own (a packing that another
// order would find is missed: the configuration is then not generated,
// which only loosens the program). cards[i] lists, for each pod of shape
// i, the cards it takes (cards of whole-card pods first, in order).
func (c *nodeConfigs) pack(a []int64) (cards [][][]int, ok bool) {
	var cpu, memory, whole int64
	var shares []int
	for i, n := range a {
		if n == 0 {
			continue
		}
		s := &c.shapes[i]
		cpu += n * s.cpu
		memory += n * s.memory
		if s.whole() {
			whole += n * s.cards
			continue
		}
		for range n {
			shares = append(shares, i)
		}
	}
	if cpu > c.cpu || memory > c.memory || whole > int64(c.cards) {
		return nil, false
	}
	cards = make([][][]int, len(a))
	next := 0
	for i, n := range a {
		if s := &c.shapes[i]; s.whole() {
			for range n {
				cards[i] = append(cards[i], seq(next, int(s.cards)))
				next += int(s.cards)
			}
		}
	}
	slices.SortStableFunc(shares, func(x, y int) int { return int(c.shapes[y].milli - c.shapes[x].milli) })
	used := make([]int64, c.cards)
	for _, i := range shares {
		s := &c.shapes[i]
		var on []int
		for k := next; k < c.cards && len(on) < int(s.cards); k++ {
			if used[k]+s.milli <= CardUnits {
				used[k] += s.milli
				on = append(on, k)
			}
		}
		if len(on) < int(s.cards) {
			return nil, false
		}
		cards[i] = append(cards[i], on)
	}
	return cards, true
}

// seq is n cards from first on.
func seq(first, n int) []int {
	out := make([]int, n)
	for k := range out {
		out[k] = first + k
	}
	return out
}
