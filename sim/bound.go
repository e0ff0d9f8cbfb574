package sim

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
)

// The bound: no placement of a set of pods on a set of nodes places more
// GPU than the optimum of a linear program over node types and pod shapes,
// so 100 - that optimum as % of capacity is an unallocated % that no
// policy, online or offline, can beat on the same arrived pods.
//
// Nodes alike in model, cards, CPU and memory form a type t (N_t nodes of
// C_t cards); GPU pods alike in cards, share, CPU, memory and allowed
// models form a shape s (n_s pods, each g_s cards of m_s thousandths,
// d_s = g_s·m_s). The variable y_ts in [0, 1] is the fraction of shape s's
// pods placed on nodes of type t (0 where one such pod fits no node of the
// type: a model it does not allow, more cards, CPU or memory than a node
// has). Maximise Σ d_s·n_s·y_ts subject to Σ_t y_ts ≤ 1 for every shape and,
// for every type, what any single node of it obeys, summed over its N_t
// nodes:
//
//   - GPU: Σ d_s·n_s·y_ts ≤ 1000·C_t·N_t, and likewise CPU and memory;
//   - cards (a share lies on one card): Σ u_k(s)·n_s·y_ts ≤ C_t·N_t for
//     k = 1..cardCuts, where u_k(s) = g_s for a pod of whole cards and
//     u^(k)(m_s/1000) for a share;
//   - one node: Σ u^(k)(r_s/R_t)·n_s·y_ts ≤ N_t for k = 1..nodeCuts, for
//     each of the node's cards (r_s = the cards' worth a pod uses, g_s·m_s/
//     1000), CPU and memory;
//   - one card's configuration: the shares a card holds are one of the
//     multisets of share sizes that fit it, and the type's cards, each
//     holding one such configuration or a whole-card pod's card, are
//     C_t·N_t at most (cardConfigs writes these rows). This is Gilmore and
//     Gomory's program of the cutting-stock problem ("A linear programming
//     approach to the cutting-stock problem", Oper. Res. 9, 1961) over each
//     type's cards, with its columns generated (solveBound).
//
// u^(k) is Fekete and Schepers' dual feasible function, u^(k)(x) = x when
// (k+1)·x is an integer and ⌊(k+1)·x⌋/k otherwise: whatever items share a
// bin (their sizes sum to at most 1), their u^(k) sum to at most 1 too
// (S. P. Fekete, J. Schepers, "New classes of fast lower bounds for bin
// packing problems", Math. Program. 91, 2001). With k = 1 it says that two
// shares over half a card never share one; larger k say the same of three
// over a third, and so on. Each cut holds card by card or node by node in
// every placement, so in their sum over a type's nodes, so adding them
// keeps the program a relaxation: its optimum is an upper bound. The
// configurations imply every card cut, and say more where the sizes
// cannot fill a card: a card of a 0.65 share and a 0.23 one strands 0.12
// when no share of 0.12 or less is there, which the cuts let other shares
// fill in part.
const (
	// cardCuts and nodeCuts are how many dual feasible functions, k =
	// 1..n, cut per card and per node; more tighten the bound a little and
	// grow the program.
	cardCuts = 4
	nodeCuts = 2
)

// dff is u^(k)(a/b) for 0 ≤ a ≤ b, Fekete and Schepers' dual feasible
// function.
func dff(k int, a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	if (int64(k+1)*a)%b == 0 {
		return float64(a) / float64(b)
	}
	return math.Floor(float64(int64(k+1)*a)/float64(b)) / float64(k)
}

// nodeType is nodes alike in what placement reads.
type nodeType struct {
	model       string
	cards       int
	cpu, memory int64
	count       int64
}

// shape is GPU pods alike in what placement reads.
type shape struct {
	shapeKey
	allowed []string
	count   int64
	// placed is how many of its pods the bound's solution places
	// (fractions included); set by solveBound.
	placed float64
}

func (s *shape) demand() int64 { return s.cards * s.milli }

// fits tells whether one pod of s fits an empty node of type t.
func (s *shape) fits(t *nodeType) bool {
	return s.cards <= int64(t.cards) && s.cpu <= t.cpu && s.memory <= t.memory && contract.ModelAllowed(s.allowed, t.model)
}

// nodeTypes is the nodes' types, in the order the nodes first show them.
func nodeTypes(nodes []Node) []*nodeType {
	var out []*nodeType
	for i, ti := range nodeTypeOf(nodes) {
		if ti == len(out) {
			n := &nodes[i]
			out = append(out, &nodeType{model: n.Model, cards: n.GPUs, cpu: n.CPUMilli, memory: n.MemoryMiB})
		}
		out[ti].count++
	}
	return out
}

// nodeTypeOf is each node's type, as its index in nodeTypes(nodes).
func nodeTypeOf(nodes []Node) []int {
	at := map[nodeType]int{}
	out := make([]int, len(nodes))
	for i, n := range nodes {
		k := nodeType{model: n.Model, cards: n.GPUs, cpu: n.CPUMilli, memory: n.MemoryMiB}
		ti, ok := at[k]
		if !ok {
			ti = len(at)
			at[k] = ti
		}
		out[i] = ti
	}
	return out
}

// shapeKey is what makes pods one shape; models is the allowed models as
// fmt.Sprint writes the list ("[]" for any).
type shapeKey struct {
	cards, milli, cpu, memory int64
	models                    string
}

func keyOf(p *Pod) shapeKey {
	return shapeKey{p.NumGPU, p.GPUMilli, p.CPUMilli, p.MemoryMiB, fmt.Sprint(p.Models)}
}

func podShapes(pods []Pod, arrived []int) []*shape {
	byKey := map[shapeKey]*shape{}
	var out []*shape
	for _, i := range arrived {
		p := &pods[i]
		if p.NumGPU == 0 {
			continue // a CPU-only pod places no GPU: leaving it out only frees room
		}
		k := keyOf(p)
		s := byKey[k]
		if s == nil {
			s = &shape{shapeKey: k, allowed: p.Models}
			byKey[k] = s
			out = append(out, s)
		}
		s.count++
	}
	return out
}

// Solver is the linear program solver UpperBound runs: GLPK's glpsol
// (Debian's glpk-utils), which reads the program in CPLEX LP format. A
// pure-Go dense simplex (gonum's) did not finish the trace's program of a
// few hundred rows in ten minutes; glpsol takes milliseconds.
var Solver = "glpsol"

// UpperBound is the optimum of the linear program above for the pods
// arrived (indices into pods, repeats allowed): the most GPU, in
// thousandths of a card, that any placement of them on the nodes can place.
func UpperBound(ctx context.Context, nodes []Node, pods []Pod, arrived []int) (float64, error) {
	opt, _, err := solveBound(ctx, nodes, pods, arrived)
	return opt, err
}

// maxRounds caps the rounds of column generation; the bound is valid
// whenever it stops (see solveBound).
const maxRounds = 500

// solveBound solves the program: its optimum (or a bound on it, if the
// column generation is cut short), and the arrived GPU pods' shapes with
// how many of each its last solution places (shape.placed).
//
// The card configurations are too many to write down, so the program
// starts with one per type and share size (as many shares of that size as
// a card holds) and grows by column generation: after each solve, the
// configuration of largest reduced cost for each type is found exactly
// (a knapsack over one card, priced by the solve's duals; see
// cardConfigs.price) and added, until none has a positive one. Whenever it
// stops, the optimum of the full program is at most the last optimum plus,
// for each type, its cards times the largest reduced cost found (the
// Lagrangian bound of the duals); the least such value over the rounds is
// returned, so a capped run still bounds every placement.
func solveBound(ctx context.Context, nodes []Node, pods []Pod, arrived []int) (float64, []*shape, error) {
	return solveProgram(ctx, newBoundProgram(nodes, pods, arrived, cardLevel))
}

// solveProgram runs b's column generation as solveBound describes.
func solveProgram(ctx context.Context, b *boundProgram) (float64, []*shape, error) {
	if len(b.cols) == 0 {
		return 0, b.shapes, nil
	}
	dir, err := os.MkdirTemp("", "gpupack-bound-")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(dir)
	program, solution := filepath.Join(dir, "bound.lp"), filepath.Join(dir, "bound.sol")
	best := math.Inf(1)
	var values []float64
	for b.solved = 1; ; b.solved++ {
		if err := os.WriteFile(program, b.text(), 0o644); err != nil {
			return 0, nil, err
		}
		out, err := exec.CommandContext(ctx, Solver, "--lp", program, "-w", solution).CombinedOutput()
		if err != nil {
			if errors.Is(err, exec.ErrNotFound) {
				return 0, nil, fmt.Errorf("the bound needs GLPK's %s (Debian: apt-get install glpk-utils): %w", Solver, err)
			}
			return 0, nil, fmt.Errorf("%s: %w: %s", Solver, err, bytes.TrimSpace(out))
		}
		opt, x, duals, err := readSolution(solution, b.columns(), b.rows)
		if err != nil {
			return 0, nil, err
		}
		values = x
		gain, added := 0.0, false
		for _, c := range b.cards {
			rc, grew := c.price(duals)
			gain += float64(c.count) * max(0, rc)
			added = added || grew
		}
		for _, c := range b.nodes {
			rc, grew := c.price(duals)
			gain += float64(c.count) * max(0, rc)
			added = added || grew
		}
		best = min(best, opt+gain)
		if !added || b.solved == b.maxRounds {
			break
		}
	}
	for j, s := range b.cols {
		s.placed += values[j]
	}
	b.values = values
	return best, b.shapes, nil
}

// boundProgram is the linear program of the bound: the rows that read no
// card configuration, written once, and each type's cards, whose
// configurations grow round by round.
type boundProgram struct {
	shapes []*shape
	// cols are the shapes of the x columns in the order they first appear
	// (in the objective), which is glpsol's numbering of them; the
	// configurations' columns follow.
	cols   []*shape
	colAt  [][2]int     // each x column's type and shape: x_t_s
	obj    bytes.Buffer // the x columns' terms
	fixed  bytes.Buffer // the rows that read no configuration
	fixedN int          // how many
	cards  []*cardConfigs
	nodes  []*nodeConfigs
	rows   int // rows in the program, as text last wrote it
	// maxRounds caps the solves; solved counts them.
	maxRounds, solved int
	// values are the columns' values in the last solve.
	values []float64
}

// boundLevel is how much of what one card or node holds the program
// knows: the bound's program is at cardLevel, ProgramPacking's at
// nodeLevel, and the tests compare the levels.
type boundLevel int

const (
	// cutsLevel: only the cuts bound what a card and a node hold.
	cutsLevel boundLevel = iota
	// cardLevel adds the card configurations.
	cardLevel
	// nodeLevel adds the node configurations too.
	nodeLevel
)

// newBoundProgram builds the program for the pods arrived, knowing as much
// as level says.
func newBoundProgram(nodes []Node, pods []Pod, arrived []int, level boundLevel) *boundProgram {
	types, shapes := nodeTypes(nodes), podShapes(pods, arrived)
	b := &boundProgram{shapes: shapes, maxRounds: maxRounds}
	// x_t_s is how many pods of shape s are placed on nodes of type t,
	// where one fits.
	shapeRows := make([]bytes.Buffer, len(shapes))
	for ti, t := range types {
		capGPU := int64(t.cards) * CardUnits
		nodes := float64(t.count)
		row := make([]bytes.Buffer, 3+cardCuts+3*nodeCuts)
		rhs := make([]float64, len(row))
		c := &cardConfigs{t: ti, count: int64(t.cards) * t.count}
		nc := newNodeConfigs(ti, t)
		for si, s := range shapes {
			if !s.fits(t) {
				continue
			}
			b.cols, b.colAt = append(b.cols, s), append(b.colAt, [2]int{ti, si})
			term(&b.obj, float64(s.demand()), "x", ti, si)
			term(&shapeRows[si], 1, "x", ti, si)
			if level >= cardLevel {
				c.add(s, si)
			}
			if level >= nodeLevel {
				nc.add(s, si)
			}
			r := 0
			add := func(coef, right float64) {
				term(&row[r], coef, "x", ti, si)
				rhs[r] = right
				r++
			}
			add(float64(s.demand()), float64(capGPU)*nodes)
			add(float64(s.cpu), float64(t.cpu)*nodes)
			add(float64(s.memory), float64(t.memory)*nodes)
			for k := 1; k <= cardCuts; k++ {
				u := float64(s.cards)
				if s.milli < CardUnits {
					u = dff(k, s.milli, CardUnits)
				}
				add(u, float64(t.cards)*nodes)
			}
			for k := 1; k <= nodeCuts; k++ {
				add(dff(k, s.demand(), capGPU), nodes)
				add(dff(k, s.cpu, t.cpu), nodes)
				add(dff(k, s.memory, t.memory), nodes)
			}
		}
		for r := range row {
			if row[r].Len() > 0 {
				fmt.Fprintf(&b.fixed, " t%d_%d:%s <= %s\n", ti, r, row[r].String(), strconv.FormatFloat(rhs[r], 'g', -1, 64))
				b.fixedN++
			}
		}
		if len(c.sizes) > 0 {
			c.seed()
			b.cards = append(b.cards, c)
		}
		if len(nc.shapes) > 0 {
			nc.seed()
			b.nodes = append(b.nodes, nc)
		}
	}
	for si, s := range shapes {
		if shapeRows[si].Len() > 0 {
			fmt.Fprintf(&b.fixed, " s%d:%s <= %d\n", si, shapeRows[si].String(), s.count)
			b.fixedN++
		}
	}
	return b
}

// term writes "+ coef name_t_s", or nothing for a zero coefficient.
func term(w *bytes.Buffer, coef float64, name string, t, s int) {
	if coef != 0 {
		fmt.Fprintf(w, " + %s %s_%d_%d", strconv.FormatFloat(coef, 'g', -1, 64), name, t, s)
	}
}

// columns is how many columns the program has.
func (b *boundProgram) columns() int {
	n := len(b.cols)
	for _, c := range b.cards {
		n += len(c.configs)
	}
	for _, c := range b.nodes {
		n += len(c.configs)
	}
	return n
}

// text writes the program in CPLEX LP format: the configurations' rows
// first, so that each type knows the numbers of its rows; the rows are
// numbered in the order written.
func (b *boundProgram) text() []byte {
	var w bytes.Buffer
	w.WriteString("Maximize\n placed:")
	w.Write(b.obj.Bytes())
	for _, c := range b.cards {
		for j := range c.configs {
			// A zero coefficient still numbers the column here, after
			// the x columns.
			fmt.Fprintf(&w, " + 0 z_%d_%d", c.t, j)
		}
	}
	for _, c := range b.nodes {
		for j := range c.configs {
			fmt.Fprintf(&w, " + 0 w_%d_%d", c.t, j)
		}
	}
	w.WriteString("\nSubject To\n")
	row := 0
	for _, c := range b.cards {
		row = c.writeRows(&w, row)
	}
	for _, c := range b.nodes {
		row = c.writeRows(&w, row)
	}
	w.Write(b.fixed.Bytes())
	b.rows = row + b.fixedN
	w.WriteString("End\n")
	return w.Bytes()
}

// readSolution reads an optimal basic solution from glpsol's plain-text
// solution file: the objective ("s bas ROWS COLS PRIMAL DUAL OBJ", where
// PRIMAL and DUAL are "f" when feasible: both, at the optimum), the rows'
// duals ("i ROW STATUS VALUE DUAL") and the columns' values ("j COL STATUS
// VALUE DUAL").
func readSolution(file string, columns, rows int) (opt float64, values, duals []float64, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, nil, nil, err
	}
	found := false
	values, duals = make([]float64, columns), make([]float64, rows)
	// number reads line f's row or column number, 1 to n, and its
	// field'th value.
	number := func(f []string, what string, n, field int) (int, float64, error) {
		i, err := strconv.Atoi(f[1])
		if err != nil || i < 1 || i > n {
			return 0, 0, fmt.Errorf("%s: %s %q of %d", file, what, f[1], n)
		}
		v, err := strconv.ParseFloat(f[field], 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %s %d: %w", file, what, i, err)
		}
		return i - 1, v, nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 7 && f[0] == "s" && f[1] == "bas":
			if f[4] != "f" || f[5] != "f" {
				return 0, nil, nil, fmt.Errorf("the bound's linear program has no optimum (primal %s, dual %s)", f[4], f[5])
			}
			if opt, err = strconv.ParseFloat(f[6], 64); err != nil {
				return 0, nil, nil, fmt.Errorf("%s: objective: %w", file, err)
			}
			found = true
		case len(f) == 5 && f[0] == "i":
			i, v, err := number(f, "row", rows, 4)
			if err != nil {
				return 0, nil, nil, err
			}
			duals[i] = v
		case len(f) == 5 && f[0] == "j":
			j, v, err := number(f, "column", columns, 3)
			if err != nil {
				return 0, nil, nil, err
			}
			values[j] = v
		}
	}
	if !found {
		return 0, nil, nil, fmt.Errorf("%s: no solution line", file)
	}
	return opt, values, duals, nil
}

// Arrived is the protocol's arrived set at pct% of capacity (the pods of
// Order up to the last whose arrival keeps the GPU asked for at or below
// it), as indices into pods.
func Arrived(pods []Pod, seed int64, capacity int64, pct int64) []int {
	var out []int
	var asked int64
	for _, i := range Order(pods, seed, capacity) {
		if asked+pods[i].Demand() > capacity*pct/100 {
			break
		}
		asked += pods[i].Demand()
		out = append(out, i)
	}
	return out
}

// largestFirst orders the arrived pods for offline packing: most cards
// first, then the largest share, then the fewest models allowed (the least
// flexible), then the most CPU, then memory; the protocol's order breaks
// the remaining ties.
func largestFirst(pods []Pod, arrived []int) []int {
	out := slices.Clone(arrived)
	slices.SortStableFunc(out, func(a, b int) int {
		pa, pb := &pods[a], &pods[b]
		return cmp.Or(
			cmp.Compare(pb.NumGPU, pa.NumGPU),
			cmp.Compare(pb.GPUMilli, pa.GPUMilli),
			cmp.Compare(flexibility(pa), flexibility(pb)),
			cmp.Compare(pb.CPUMilli, pa.CPUMilli),
			cmp.Compare(pb.MemoryMiB, pa.MemoryMiB))
	})
	return out
}

// Limit is what no placement of the protocol's arrived pods at 100% can
// beat, and the best offline placement found, for one seed.
type Limit struct {
	Seed int64 `json:"seed"`
	// BoundUnallocated is 100 - UpperBound as % of capacity: no placement
	// leaves less GPU unallocated.
	BoundUnallocated float64 `json:"bound_unallocated_pct_at_100"`
	// BoundLeavesOut is the GPU (% of capacity) of the pods the bound's
	// solution does not place, by request ("1x810": one card, 810
	// thousandths of it): where the limit comes from.
	BoundLeavesOut map[string]float64 `json:"bound_leaves_out_pct"`
	// OfflineUnallocated is the best offline packing found: the arrived
	// pods, seen all at once, placed in each of OfflineOrders by each of
	// OfflinePolicies; Offline says which did best ("policy, order").
	OfflineUnallocated float64 `json:"offline_unallocated_pct_at_100"`
	Offline            string  `json:"offline"`
	// ProgramUnallocated is what the packing by integer program
	// (ProgramPacking) left, where it ran (nil: not run): one of the
	// packings OfflineUnallocated is the best of.
	ProgramUnallocated *float64 `json:"program_unallocated_pct_at_100,omitempty"`
	// ProgramLeavesOut is the GPU (% of capacity) of the pods that packing
	// leaves out, by request, as BoundLeavesOut.
	ProgramLeavesOut map[string]float64 `json:"program_leaves_out_pct,omitempty"`
}

// OfflinePolicies are the policies an offline packing tries, ties to the
// first node, measuring fragmentation against the whole arrived set.
var OfflinePolicies = []policy.Name{policy.Fill, policy.BestFit, policy.Binpack, policy.FGD}

// OfflineOrders are the orders an offline packing tries: the protocol's
// own arrival order, largest first (largestFirst), and the least flexible
// first (constrainedFirst). Limits also tries the bound's own choice
// (boundGuided).
var OfflineOrders = map[string]func(pods []Pod, arrived []int) []int{
	"arrival":           func(_ []Pod, arrived []int) []int { return arrived },
	"largest first":     largestFirst,
	"constrained first": constrainedFirst,
}

// Limits computes the bound and the best offline packing of the pods
// arrived at 100% under the protocol's order for seed; with program
// positive, the packing by integer program (ProgramPacking, for up to
// program) is tried too.
func Limits(ctx context.Context, nodes []Node, pods []Pod, seed int64, program time.Duration) (*Limit, error) {
	capacity := Capacity(nodes)
	if capacity == 0 {
		return nil, fmt.Errorf("the nodes have no GPU")
	}
	arrived := Arrived(pods, seed, capacity, 100)
	ub, shapes, err := solveBound(ctx, nodes, pods, arrived)
	if err != nil {
		return nil, err
	}
	l := &Limit{Seed: seed, BoundUnallocated: 100 - 100*ub/float64(capacity), OfflineUnallocated: math.Inf(1), BoundLeavesOut: map[string]float64{}}
	quota := make(map[shapeKey]float64, len(shapes))
	for _, s := range shapes {
		quota[s.shapeKey] = s.placed
		if out := float64(s.count) - s.placed; out > 1e-6 {
			l.BoundLeavesOut[fmt.Sprintf("%dx%d", s.cards, s.milli)] += 100 * out * float64(s.demand()) / float64(capacity)
		}
	}
	// The arrived pods only: Workload Trace then measures against them.
	arrivedPods := make([]Pod, len(arrived))
	for i, pi := range arrived {
		arrivedPods[i] = pods[pi]
	}
	all := make([]int, len(arrived))
	for i := range all {
		all[i] = i
	}
	if len(arrived) == 0 {
		l.OfflineUnallocated, l.Offline = 100, "nothing arrived"
		return l, nil
	}
	var start [][]int // the best packing's pods, by node
	orders := maps.Clone(OfflineOrders)
	orders["bound-guided"] = func(pods []Pod, arrived []int) []int { return boundGuided(pods, arrived, quota) }
	for _, order := range slices.Sorted(maps.Keys(orders)) {
		seq := orders[order](arrivedPods, all)
		for _, name := range OfflinePolicies {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			p, err := policy.Get(name)
			if err != nil {
				return nil, err
			}
			r, err := Replay(Config{Nodes: nodes, Pods: arrivedPods, Policy: p, Seed: seed, Workload: Trace, Ties: TieFirst, Sequence: seq})
			if err != nil {
				return nil, err
			}
			var placed int64
			if n := len(r.Placements); n > 0 {
				placed = r.Placements[n-1].Allocated
			}
			if u := 100 - 100*float64(placed)/float64(capacity); u < l.OfflineUnallocated {
				l.OfflineUnallocated, l.Offline = u, string(name)+", "+order
				start = make([][]int, len(nodes))
				for _, p := range r.Placements {
					if p.Node >= 0 {
						start[p.Node] = append(start[p.Node], arrived[p.Pod])
					}
				}
			}
		}
	}
	if program > 0 {
		placements, placed, err := ProgramPacking(ctx, nodes, pods, arrived, program, start)
		if err != nil {
			return nil, err
		}
		u := 100 - 100*float64(placed)/float64(capacity)
		l.ProgramUnallocated, l.ProgramLeavesOut = &u, map[string]float64{}
		left := map[int]int{}
		for _, pi := range arrived {
			left[pi]++
		}
		for _, p := range placements {
			left[p.Pod]--
		}
		for pi, n := range left {
			if p := &pods[pi]; n > 0 && p.NumGPU > 0 {
				l.ProgramLeavesOut[fmt.Sprintf("%dx%d", p.NumGPU, p.GPUMilli)] += 100 * float64(n) * float64(p.Demand()) / float64(capacity)
			}
		}
		if u < l.OfflineUnallocated {
			l.OfflineUnallocated, l.Offline = u, "integer program over node configurations"
		}
	}
	return l, nil
}

// boundGuided orders the arrived pods largest first, but of each shape
// only as many as the bound's solution places (rounded down) come in that
// order; the rest follow, largest first: the pods the program would leave
// out are tried last.
func boundGuided(pods []Pod, arrived []int, quota map[shapeKey]float64) []int {
	left := maps.Clone(quota)
	var first, last []int
	for _, i := range largestFirst(pods, arrived) {
		k := keyOf(&pods[i])
		if left[k] >= 1-1e-9 {
			left[k]--
			first = append(first, i)
		} else {
			last = append(last, i)
		}
	}
	return append(first, last...)
}

// constrainedFirst orders the arrived pods for offline packing: those
// that allow fewest card models first, then those of most cards; the
// arrival order breaks the remaining ties.
func constrainedFirst(pods []Pod, arrived []int) []int {
	out := slices.Clone(arrived)
	slices.SortStableFunc(out, func(a, b int) int {
		pa, pb := &pods[a], &pods[b]
		return cmp.Or(cmp.Compare(flexibility(pa), flexibility(pb)), cmp.Compare(pb.NumGPU, pa.NumGPU))
	})
	return out
}

// flexibility is how many card models a pod allows; any is the most.
func flexibility(p *Pod) int {
	if len(p.Models) == 0 {
		return math.MaxInt
	}
	return len(p.Models)
}

// LimitsSummary is limits.json: the limits per seed, then their mean and
// sample standard deviation.
type LimitsSummary struct {
	Bound   string  `json:"bound"`
	Offline string  `json:"offline"`
	Seeds   []Limit `json:"seeds"`
	// BoundMean and OfflineMean are the unallocated % at 100% arrived.
	BoundMean   float64 `json:"bound_unallocated_pct_at_100_mean"`
	BoundStd    float64 `json:"bound_unallocated_pct_at_100_std"`
	OfflineMean float64 `json:"offline_unallocated_pct_at_100_mean"`
	OfflineStd  float64 `json:"offline_unallocated_pct_at_100_std"`
}

// BoundText and OfflineText say in limits.json what the two figures are.
const (
	BoundText   = "no placement of the pods arrived at 100% leaves less GPU unallocated: 100 - the optimum of a linear program over node types and pod shapes (GPU, CPU, memory, models, each card's configuration of shares, and cuts by dual feasible functions per card and per node) as % of capacity; sim/README.md derives it"
	OfflineText = "the best offline packing found: the pods arrived at 100%, seen all at once, in each of several orders (arrival, largest first, constrained first, guided by the bound's solution), by each of fill, bestfit, binpack and fgd, ties to the first node; with --limits-program, also by an integer program over node configurations"
)

// runLimits computes Limits for every seed, opts.Parallel at once, and
// writes limits.json.
func runLimits(opts Options, nodes []Node, pods []Pod) (*LimitsSummary, error) {
	out := make([]*Limit, len(opts.Seeds))
	errs := make([]error, len(opts.Seeds))
	forEach(len(opts.Seeds), opts.Parallel, func(i int) {
		out[i], errs[i] = Limits(context.Background(), nodes, pods, opts.Seeds[i], opts.ProgramTime)
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &LimitsSummary{Bound: BoundText, Offline: OfflineText}
	var bounds, offline []float64
	for _, l := range out {
		s.Seeds = append(s.Seeds, *l)
		bounds = append(bounds, l.BoundUnallocated)
		offline = append(offline, l.OfflineUnallocated)
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, "limits seed %d: bound %.2f%% unallocated at 100%%; best offline packing %.2f%% (%s)\n", l.Seed, l.BoundUnallocated, l.OfflineUnallocated, l.Offline)
		}
	}
	s.BoundMean, s.BoundStd = meanStd(bounds)
	s.OfflineMean, s.OfflineStd = meanStd(offline)
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return s, os.WriteFile(filepath.Join(opts.Out, "limits.json"), append(data, '\n'), 0o644)
}
