package sim

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"testing"
	"time"
)

// needSolver skips a test of the bound where GLPK is not installed, except
// in CI (CI=true), where make installs it and its absence is a failure.
func needSolver(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(Solver); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (make test-deps installs glpk-utils): %v", Solver, err)
		}
		t.Skipf("%s is not installed (apt-get install glpk-utils, or make test-deps as root)", Solver)
	}
}

// TestDFF: whatever items fit one bin, their u^(k) sum to at most 1; and
// u^(k) is the identity where (k+1)·x is whole.
func TestDFF(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for trial := range 20000 {
		k := 1 + rng.Intn(6)
		const b = 1000
		var items []int64
		for left := int64(b); left > 0 && len(items) < 8; {
			x := 1 + rng.Int63n(left)
			items = append(items, x)
			left -= x
			if rng.Intn(4) == 0 {
				break
			}
		}
		sum := 0.0
		for _, x := range items {
			sum += dff(k, x, b)
		}
		if sum > 1+1e-12 {
			t.Fatalf("trial %d: k=%d, items %v of %d: u sum %v > 1", trial, k, items, b, sum)
		}
	}
	for _, c := range []struct {
		k    int
		a, b int64
		want float64
	}{
		{1, 600, 1000, 1}, {1, 500, 1000, 0.5}, {1, 400, 1000, 0},
		{2, 400, 1000, 0.5}, {2, 300, 1000, 0}, {3, 250, 1000, 0.25}, {3, 300, 1000, 1.0 / 3},
	} {
		if got := dff(c.k, c.a, c.b); got != c.want {
			t.Errorf("u^(%d)(%d/%d) = %v, want %v", c.k, c.a, c.b, got, c.want)
		}
	}
}

// TestUpperBoundCases: small cases whose optimum is known by hand.
func TestUpperBoundCases(t *testing.T) {
	needSolver(t)
	node := func(cards int, model string) Node {
		return Node{Name: "n", CPUMilli: 64000, MemoryMiB: 262144, GPUs: cards, Model: model}
	}
	share := func(milli int64, models ...string) Pod {
		return Pod{CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: milli, Models: models}
	}
	tests := []struct {
		name  string
		nodes []Node
		pods  []Pod
		want  float64
	}{
		// Capacity alone would allow 1000; the k=2 cut says two at most.
		{"three 0.4 shares on one card", []Node{node(1, "T4")}, []Pod{share(400), share(400), share(400)}, 800},
		// The k=1 cut: two shares over half never share a card.
		{"two 0.6 shares on one card", []Node{node(1, "T4")}, []Pod{share(600), share(600)}, 600},
		{"shares that tile a card", []Node{node(1, "T4")}, []Pod{share(250), share(250), share(500)}, 1000},
		// The cuts allow 1000; no two of the three share a card but 0.65
		// and 0.23, so a card of them strands 0.12.
		{"a card's configuration", []Node{node(1, "T4")}, []Pod{share(160), share(650), share(230)}, 880},
		{"a card's configuration, three sizes", []Node{node(1, "T4")}, []Pod{share(230), share(470), share(550)}, 780},
		{"a model the node lacks", []Node{node(2, "T4")}, []Pod{share(500, "V100"), share(500)}, 500},
		{"CPU binds", []Node{{Name: "n", CPUMilli: 3000, MemoryMiB: 1 << 20, GPUs: 4, Model: "T4"}},
			[]Pod{{CPUMilli: 2000, NumGPU: 2, GPUMilli: 1000}, {CPUMilli: 2000, NumGPU: 2, GPUMilli: 1000}}, 2000},
		{"more cards than a node has", []Node{node(2, "T4"), node(2, "T4")}, []Pod{{NumGPU: 4, GPUMilli: 1000}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := UpperBound(t.Context(), tt.nodes, tt.pods, all(len(tt.pods)))
			if err != nil {
				t.Fatal(err)
			}
			if !near(got, tt.want) {
				t.Errorf("bound %v, want %v", got, tt.want)
			}
			if opt := bruteForce(tt.nodes, tt.pods); !near(opt, tt.want) {
				t.Errorf("brute force %v, want %v (the case is wrong)", opt, tt.want)
			}
		})
	}
}

// TestUpperBoundAgainstBruteForce: on random small clusters and pod sets,
// the bound is never below the best placement, which brute force finds,
// nor above the program of cuts alone, nor below the optimum when its
// column generation stops after one or two solves (the Lagrangian bound
// then); and the best offline packing found (Limits) is never above it.
func TestUpperBoundAgainstBruteForce(t *testing.T) {
	needSolver(t)
	rng := rand.New(rand.NewSource(7))
	models := []string{"T4", "V100", "A100"}
	shares := []int64{100, 200, 250, 300, 350, 400, 500, 600, 700, 1000}
	var gapped, cutsGapped, limits, programShort int
	for trial := range 300 {
		var nodes []Node
		for i := range 1 + rng.Intn(3) {
			nodes = append(nodes, Node{Name: fmt.Sprint("n", i), CPUMilli: 1000 * (2 + rng.Int63n(8)), MemoryMiB: 1024 * (2 + rng.Int63n(8)),
				GPUs: 1 + rng.Intn(3), Model: models[rng.Intn(len(models))]})
		}
		var pods []Pod
		for i := range 2 + rng.Intn(5) {
			p := Pod{Name: fmt.Sprint("p", i), CPUMilli: 500 * rng.Int63n(6), MemoryMiB: 512 * rng.Int63n(6), NumGPU: 1, GPUMilli: shares[rng.Intn(len(shares))]}
			if rng.Intn(5) == 0 {
				p.NumGPU, p.GPUMilli = 2, 1000
			}
			if rng.Intn(4) == 0 {
				p.Models = []string{models[rng.Intn(len(models))]}
			}
			pods = append(pods, p)
		}
		ub, err := UpperBound(t.Context(), nodes, pods, all(len(pods)))
		if err != nil {
			t.Fatal(err)
		}
		opt := bruteForce(nodes, pods)
		if ub < opt-1e-6 {
			t.Fatalf("trial %d: bound %v below the optimum %v\nnodes %+v\npods %+v", trial, ub, opt, nodes, pods)
		}
		if ub > opt+1e-6 {
			gapped++
		}
		cuts, _, err := solveProgram(t.Context(), newBoundProgram(nodes, pods, all(len(pods)), cutsLevel))
		if err != nil {
			t.Fatal(err)
		}
		if ub > cuts+1e-6 {
			t.Fatalf("trial %d: bound %v above the cuts' alone %v", trial, ub, cuts)
		}
		if cuts > opt+1e-6 {
			cutsGapped++
		}
		// The program over node configurations bounds too, however its
		// configurations are priced; and the packing by integer program
		// is a placement, so never above the optimum.
		nodeUB, _, err := solveProgram(t.Context(), newBoundProgram(nodes, pods, all(len(pods)), nodeLevel))
		if err != nil {
			t.Fatal(err)
		}
		if nodeUB < opt-1e-6 {
			t.Fatalf("trial %d: the program over node configurations bounds %v, below the optimum %v", trial, nodeUB, opt)
		}
		_, packed, err := ProgramPacking(t.Context(), nodes, pods, all(len(pods)), time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if float64(packed) > opt+1e-6 {
			t.Fatalf("trial %d: the integer program packed %d, above the optimum %v\nnodes %+v\npods %+v", trial, packed, opt, nodes, pods)
		}
		if float64(packed) < opt-1e-6 {
			programShort++
		}
		for rounds := 1; rounds <= 2; rounds++ {
			b := newBoundProgram(nodes, pods, all(len(pods)), cardLevel)
			b.maxRounds = rounds
			capped, _, err := solveProgram(t.Context(), b)
			if err != nil {
				t.Fatal(err)
			}
			if capped < opt-1e-6 || capped < ub-1e-6 {
				t.Fatalf("trial %d: after %d solves the bound is %v, below the optimum %v or the bound %v", trial, rounds, capped, opt, ub)
			}
		}
		// Limits, on the protocol's arrived set: the bound is the
		// program's, and the offline packing is a placement.
		var arrived []Pod
		for _, i := range Arrived(pods, int64(trial), Capacity(nodes), 100) {
			arrived = append(arrived, pods[i])
		}
		if len(arrived) > 7 {
			continue // copies inflate it: too many for brute force
		}
		l, err := Limits(t.Context(), nodes, pods, int64(trial), 0)
		if err != nil {
			t.Fatal(err)
		}
		capacity := float64(Capacity(nodes))
		limits++
		best := 100 - 100*bruteForce(nodes, arrived)/capacity
		if l.BoundUnallocated > best+1e-6 || l.OfflineUnallocated < best-1e-6 {
			t.Fatalf("trial %d: bound %.4f%%, offline %.4f%%, best placement %.4f%% unallocated", trial, l.BoundUnallocated, l.OfflineUnallocated, best)
		}
	}
	t.Logf("the bound was above the optimum in %d of 300 cases (the cuts alone: %d); the integer program packed less than the optimum in %d; Limits checked in %d", gapped, cutsGapped, programShort, limits)
	if programShort > 30 {
		t.Errorf("the integer program packed less than the optimum in %d of 300 cases", programShort)
	}
	if gapped >= cutsGapped {
		t.Errorf("the card configurations closed no gap the cuts leave")
	}
	if limits < 100 {
		t.Errorf("Limits checked in %d cases only", limits)
	}
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func near(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 }

// bruteForce is the most GPU any placement of the pods places: every pod
// tried unplaced and on every node and card (whole cards take free ones;
// which free ones does not matter).
func bruteForce(nodes []Node, pods []Pod) float64 {
	type state struct {
		cpu, mem []int64
		used     [][]int64
	}
	st := state{cpu: make([]int64, len(nodes)), mem: make([]int64, len(nodes)), used: make([][]int64, len(nodes))}
	for i, n := range nodes {
		st.cpu[i], st.mem[i], st.used[i] = n.CPUMilli, n.MemoryMiB, make([]int64, n.GPUs)
	}
	var best int64
	var place func(i int, placed int64)
	place = func(i int, placed int64) {
		if i == len(pods) {
			best = max(best, placed)
			return
		}
		place(i+1, placed) // unplaced
		p := &pods[i]
		for n, node := range nodes {
			if p.CPUMilli > st.cpu[n] || p.MemoryMiB > st.mem[n] || !modelOK(p, node) {
				continue
			}
			st.cpu[n] -= p.CPUMilli
			st.mem[n] -= p.MemoryMiB
			if p.GPUMilli < CardUnits {
				for c := range st.used[n] {
					if st.used[n][c]+p.GPUMilli <= CardUnits {
						st.used[n][c] += p.GPUMilli
						place(i+1, placed+p.Demand())
						st.used[n][c] -= p.GPUMilli
					}
				}
			} else {
				var free []int
				for c, u := range st.used[n] {
					if u == 0 {
						free = append(free, c)
					}
				}
				if int64(len(free)) >= p.NumGPU {
					for _, c := range free[:p.NumGPU] {
						st.used[n][c] = CardUnits
					}
					place(i+1, placed+p.Demand())
					for _, c := range free[:p.NumGPU] {
						st.used[n][c] = 0
					}
				}
			}
			st.cpu[n] += p.CPUMilli
			st.mem[n] += p.MemoryMiB
		}
	}
	place(0, 0)
	return float64(best)
}

func modelOK(p *Pod, n Node) bool {
	if len(p.Models) == 0 {
		return true
	}
	for _, m := range p.Models {
		if m == n.Model {
			return true
		}
	}
	return false
}
