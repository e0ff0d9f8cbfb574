package sim

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpupack/gpupack/contract"
)

// ProgramPacking is the offline packing by integer program: the bound's
// program with the configurations of whole nodes (nodeConfigs) as well as
// of cards, its columns generated as solveBound generates them, then in
// whole numbers: w_t_j nodes of each type hold configuration j, and x_ts
// pods of each shape are placed in those nodes' room for it. Every
// configuration generated fits one node (nodeConfigs.fits), so each
// solution in whole numbers is a placement: layout puts it on the nodes,
// card by card, and checkPlacements checks the result by itself. Two are
// tried, and the one that places more kept: the linear solution rounded
// down, and the integer program's best solution that GLPK's branch and
// bound finds within limit (it may find none: on the trace, it took most
// of 5 minutes). What is left unsolved is only a packing less good, never
// a wrong one.
//
// A placement to start from, start (per node, by index into nodes, the
// indices into pods of the pods it holds; nil: none), puts each node's
// configuration among the columns, so that the integer program can do
// what that placement does.
//
// It returns the placements (Seq, Decision, Arrived and Allocated left
// zero) and the GPU they place, in thousandths of a card.
func ProgramPacking(ctx context.Context, nodes []Node, pods []Pod, arrived []int, limit time.Duration, start [][]int) ([]Placement, int64, error) {
	b := newBoundProgram(nodes, pods, arrived, nodeLevel)
	if len(b.cols) == 0 {
		return nil, 0, nil
	}
	b.start(nodes, pods, start)
	b.maxRounds = programRounds
	if _, _, err := solveProgram(ctx, b); err != nil {
		return nil, 0, err
	}
	// The linear solution rounded down: a placement already.
	down := make([]float64, len(b.values))
	for j, v := range b.values {
		down[j] = math.Floor(v + 1e-9)
	}
	best, most, err := b.place(down, nodes, pods, arrived)
	if err != nil {
		return nil, 0, err
	}
	dir, err := os.MkdirTemp("", "gpupack-packing-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	program, solution := filepath.Join(dir, "packing.lp"), filepath.Join(dir, "packing.sol")
	if err := os.WriteFile(program, b.integerText(), 0o644); err != nil {
		return nil, 0, err
	}
	secs := strconv.Itoa(max(1, int(limit.Seconds())))
	out, err := exec.CommandContext(ctx, Solver, "--lp", program, "--tmlim", secs, "-w", solution).CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, 0, fmt.Errorf("the packing needs GLPK's %s (Debian: apt-get install glpk-utils): %w", Solver, err)
		}
		return nil, 0, fmt.Errorf("%s: %w: %s", Solver, err, bytes.TrimSpace(out))
	}
	values, found, err := readIntegerSolution(solution, b.columns())
	if err != nil || !found {
		return best, most, err
	}
	placements, gpu, err := b.place(values, nodes, pods, arrived)
	if err != nil || gpu <= most {
		return best, most, err
	}
	return placements, gpu, nil
}

// place lays a solution of the program out on the nodes (layout) and
// checks the placement by itself (checkPlacements), returning it and the
// GPU it places.
func (b *boundProgram) place(values []float64, nodes []Node, pods []Pod, arrived []int) ([]Placement, int64, error) {
	placements := b.layout(values, nodes, pods, arrived)
	gpu, err := checkPlacements(nodes, pods, arrived, placements)
	if err != nil {
		return nil, 0, fmt.Errorf("the packing by integer program is no placement: %w", err)
	}
	return placements, gpu, nil
}

// start adds to the node configurations those of the placement start
// (see ProgramPacking) that fit their nodes.
func (b *boundProgram) start(nodes []Node, pods []Pod, start [][]int) {
	typeOf, shapeOf := nodeTypeOf(nodes), b.shapeIndex()
	configs := map[int]*nodeConfigs{}
	for _, c := range b.nodes {
		configs[c.t] = c
	}
	for ni, held := range start {
		if len(held) == 0 || ni >= len(nodes) {
			continue
		}
		c := configs[typeOf[ni]]
		if c == nil {
			continue
		}
		a := make([]int64, len(c.shapes))
		for _, pi := range held {
			if si, ok := shapeOf[keyOf(&pods[pi])]; ok {
				if i := c.shapeAt(si); i >= 0 {
					a[i]++
				}
			}
		}
		if c.fits(a) {
			c.keep(a)
		}
	}
}

// shapeIndex maps each shape's key to its index in b.shapes.
func (b *boundProgram) shapeIndex() map[shapeKey]int {
	at := make(map[shapeKey]int, len(b.shapes))
	for si, s := range b.shapes {
		at[s.shapeKey] = si
	}
	return at
}

// programRounds caps the column generation before the integer program: it
// finds most of what it will by then.
const programRounds = 150

// integerText is the program with its x and w columns integer.
func (b *boundProgram) integerText() []byte {
	var w bytes.Buffer
	w.Write(bytes.TrimSuffix(b.text(), []byte("End\n")))
	w.WriteString("General\n")
	for _, at := range b.colAt {
		fmt.Fprintf(&w, " x_%d_%d\n", at[0], at[1])
	}
	for _, c := range b.nodes {
		for j := range c.configs {
			fmt.Fprintf(&w, " w_%d_%d\n", c.t, j)
		}
	}
	w.WriteString("End\n")
	return w.Bytes()
}

// readIntegerSolution reads glpsol's plain-text solution of an integer
// program: "s mip ROWS COLS STATUS OBJ", where STATUS is o (optimal) or f
// (feasible) when it found an integer solution, and the columns' values
// ("j COL VALUE"). found is false when it found none.
func readIntegerSolution(file string, columns int) (values []float64, found bool, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, false, err
	}
	values = make([]float64, columns)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 6 && f[0] == "s" && f[1] == "mip":
			found = f[4] == "o" || f[4] == "f"
		case len(f) == 3 && f[0] == "j":
			j, err := strconv.Atoi(f[1])
			if err != nil || j < 1 || j > columns {
				return nil, false, fmt.Errorf("%s: column %q of %d", file, f[1], columns)
			}
			if values[j-1], err = strconv.ParseFloat(f[2], 64); err != nil {
				return nil, false, fmt.Errorf("%s: column %d: %w", file, j, err)
			}
		}
	}
	return values, found, nil
}

// layout puts an integer solution of the program on the nodes: for each
// type, as many of its nodes as w_t_j say hold configuration j, and x_ts
// pods of each shape go into those nodes' room for them, node by node.
// Each node's pods are checked to fit it again (nodeConfigs.fits: a subset
// of a configuration that fits may, rarely, not pack first fit), pods of
// least GPU taken out until they do; no type gets more nodes, nor a shape
// more pods, than it has. The pods left then go, most GPU first, to the
// first node they fit beside its pods: the program's columns are those its
// linear relaxation wanted, which may miss a node's best integer use. It
// returns the placements, the arrived pods (indices into pods) taken in
// order for each shape.
func (b *boundProgram) layout(values []float64, nodes []Node, pods []Pod, arrived []int) []Placement {
	whole := func(v float64) int64 { return int64(math.Round(max(v, 0))) }
	xs := map[[2]int]int64{}
	for j, at := range b.colAt {
		xs[at] = whole(values[j])
	}
	placed := make([]int64, len(b.shapes)) // pods of each shape placed
	col := len(b.cols)
	for _, c := range b.cards {
		col += len(c.configs)
	}
	held := make([][][]int64, len(b.nodes)) // per type, per node: pods per shape
	for ci, c := range b.nodes {
		smallestFirst := c.smallestFirst()
		left := make([]int64, len(c.shapes)) // pods of each shape to place on this type
		for i, s := range c.shapes {
			left[i] = xs[[2]int{c.t, s.si}]
		}
		for j, a := range c.configs {
			for range min(whole(values[col+j]), c.count-int64(len(held[ci]))) {
				on := make([]int64, len(a))
				for i := range a {
					k := min(a[i], left[i], c.shapes[i].count-placed[c.shapes[i].si])
					on[i], left[i] = k, left[i]-k
					placed[c.shapes[i].si] += k
				}
				for _, i := range smallestFirst {
					for on[i] > 0 && !c.fits(on) {
						on[i]--
						placed[c.shapes[i].si]--
					}
				}
				held[ci] = append(held[ci], on)
			}
		}
		for int64(len(held[ci])) < c.count {
			held[ci] = append(held[ci], make([]int64, len(c.shapes)))
		}
		col += len(c.configs)
	}
	// The pods left, most GPU first.
	order := make([]int, len(b.shapes))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int { return cmp.Compare(b.shapes[y].demand(), b.shapes[x].demand()) })
	for _, si := range order {
		for ci, c := range b.nodes {
			i := c.shapeAt(si)
			if i < 0 {
				continue
			}
			for _, on := range held[ci] {
				for placed[si] < b.shapes[si].count {
					on[i]++
					if !c.fits(on) {
						on[i]--
						break
					}
					placed[si]++
				}
			}
		}
	}
	// The nodes of each type, in the order of nodeTypes, and the arrived
	// pods of each shape.
	typeOf := nodeTypeOf(nodes)
	byType := make([][]int, len(nodeTypes(nodes)))
	for ni, ti := range typeOf {
		byType[ti] = append(byType[ti], ni)
	}
	shapeOf := b.shapeIndex()
	podsOf := make([][]int, len(b.shapes))
	for _, pi := range arrived {
		if si, ok := shapeOf[keyOf(&pods[pi])]; ok {
			podsOf[si] = append(podsOf[si], pi)
		}
	}
	var out []Placement
	for ci, c := range b.nodes {
		for k, on := range held[ci] {
			cards, ok := c.pack(on)
			if !ok {
				continue // fits said it does: never
			}
			for i, list := range cards {
				si := c.shapes[i].si
				for _, cs := range list {
					if len(podsOf[si]) == 0 {
						break // placed counts each shape's pods: never
					}
					out = append(out, Placement{Pod: podsOf[si][0], Node: byType[c.t][k], Cards: cs})
					podsOf[si] = podsOf[si][1:]
				}
			}
		}
	}
	return out
}

// checkPlacements checks that placements are a placement of the arrived
// pods (indices into pods, repeats allowed) on the nodes, by itself: each
// arrived pod placed at most once, on a node of a model it allows, within
// its CPU and memory, on as many cards as it asks, of the node's; a
// whole-card pod's cards holding nothing else, and no card more than
// whole. It returns the GPU placed, in thousandths of a card.
func checkPlacements(nodes []Node, pods []Pod, arrived []int, placements []Placement) (int64, error) {
	left := map[int]int{}
	for _, pi := range arrived {
		left[pi]++
	}
	cpu, memory := make([]int64, len(nodes)), make([]int64, len(nodes))
	used := make([][]int64, len(nodes))
	alone := make([][]bool, len(nodes)) // a card a whole-card pod holds
	for ni, n := range nodes {
		used[ni], alone[ni] = make([]int64, n.GPUs), make([]bool, n.GPUs)
	}
	var gpu int64
	for _, pl := range placements {
		if left[pl.Pod] == 0 {
			return 0, fmt.Errorf("pod %d placed more often than it arrived", pl.Pod)
		}
		left[pl.Pod]--
		if pl.Node < 0 || pl.Node >= len(nodes) {
			return 0, fmt.Errorf("pod %d on node %d of %d", pl.Pod, pl.Node, len(nodes))
		}
		p, n := &pods[pl.Pod], &nodes[pl.Node]
		if !contract.ModelAllowed(p.Models, n.Model) {
			return 0, fmt.Errorf("pod %d (models %v) on node %s (%s)", pl.Pod, p.Models, n.Name, n.Model)
		}
		cpu[pl.Node] += p.CPUMilli
		memory[pl.Node] += p.MemoryMiB
		if cpu[pl.Node] > n.CPUMilli || memory[pl.Node] > n.MemoryMiB {
			return 0, fmt.Errorf("node %s: CPU %d of %d, memory %d of %d", n.Name, cpu[pl.Node], n.CPUMilli, memory[pl.Node], n.MemoryMiB)
		}
		if int64(len(pl.Cards)) != p.NumGPU {
			return 0, fmt.Errorf("pod %d asks %d cards, has %v", pl.Pod, p.NumGPU, pl.Cards)
		}
		for k, card := range pl.Cards {
			if card < 0 || card >= n.GPUs || slices.Contains(pl.Cards[:k], card) {
				return 0, fmt.Errorf("pod %d on cards %v of node %s (%d cards)", pl.Pod, pl.Cards, n.Name, n.GPUs)
			}
			u := &used[pl.Node][card]
			if alone[pl.Node][card] || p.GPUMilli >= CardUnits && *u > 0 || *u+p.GPUMilli > CardUnits {
				return 0, fmt.Errorf("node %s card %d: %d used, pod %d asks %d", n.Name, card, *u, pl.Pod, p.GPUMilli)
			}
			*u += p.GPUMilli
			alone[pl.Node][card] = p.GPUMilli >= CardUnits
		}
		gpu += p.Demand()
	}
	return gpu, nil
}

// smallestFirst is the type's shapes' indices, least GPU per pod first.
func (c *nodeConfigs) smallestFirst() []int {
	order := make([]int, len(c.shapes))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int { return cmp.Compare(c.shapes[x].demand(), c.shapes[y].demand()) })
	return order
}
