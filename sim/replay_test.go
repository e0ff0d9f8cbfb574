package sim

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"math/rand"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpupack/gpupack/extender/policy"
)

func testPods() []Pod {
	return []Pod{
		{Name: "p3", CPUMilli: 1000, MemoryMiB: 10, NumGPU: 1, GPUMilli: 500},
		{Name: "p0", CPUMilli: 1000, MemoryMiB: 10, NumGPU: 1, GPUMilli: 1000},
		{Name: "p2", CPUMilli: 2000, MemoryMiB: 10},
		{Name: "p1", CPUMilli: 1000, MemoryMiB: 10, NumGPU: 1, GPUMilli: 300, Models: []string{"T4"}},
		{Name: "p4", CPUMilli: 500, MemoryMiB: 10, NumGPU: 2, GPUMilli: 1000},
	}
}

func TestOrder(t *testing.T) {
	pods := testPods()
	const capacity = 4000 // 130%: 5200
	seq := Order(pods, 42, capacity)

	t.Run("the originals come first, each once, sorted by name then shuffled with the seed", func(t *testing.T) {
		names := []string{"p0", "p1", "p2", "p3", "p4"}
		rand.New(rand.NewSource(42)).Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		var got []string
		for _, i := range seq[:len(pods)] {
			got = append(got, pods[i].Name)
		}
		if diff := cmp.Diff(names, got); diff != "" {
			t.Errorf("first %d (-want +got):\n%s", len(pods), diff)
		}
	})
	t.Run("no pods, no arrivals (not a panic)", func(t *testing.T) {
		if got := Order(nil, 42, capacity); len(got) != 0 {
			t.Errorf("Order of no pods = %v", got)
		}
	})
	t.Run("inflated to just below 130%", func(t *testing.T) {
		var total int64
		for _, i := range seq {
			total += pods[i].Demand()
		}
		if total > capacity*Inflation/100 {
			t.Errorf("total %d passes 130%% of %d", total, capacity)
		}
		// Replay the generator: after the shuffle, each draw picks one of the
		// shuffled originals; the first draw that would pass 130% ends it.
		rng := rand.New(rand.NewSource(42))
		perm := slices.Clone(seq[:len(pods)])
		rng.Shuffle(len(pods), func(i, j int) {}) // same draws as the shuffle
		for k := len(pods); ; k++ {
			next := perm[rng.Intn(len(pods))]
			if k == len(seq) {
				if total+pods[next].Demand() <= capacity*Inflation/100 {
					t.Errorf("stopped at %d pods although the next copy (%s) fits", k, pods[next].Name)
				}
				break
			}
			if seq[k] != next {
				t.Fatalf("copy %d is %s, want %s", k, pods[seq[k]].Name, pods[next].Name)
			}
		}
	})
	t.Run("the file's row order does not matter", func(t *testing.T) {
		rev := slices.Clone(pods)
		slices.Reverse(rev)
		a, b := names(pods, seq), names(rev, Order(rev, 42, capacity))
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("order depends on the rows' order (-given +reversed):\n%s", diff)
		}
	})
	t.Run("another seed, another order", func(t *testing.T) {
		if slices.Equal(names(pods, seq), names(pods, Order(pods, 43, capacity))) {
			t.Error("seeds 42 and 43 gave the same sequence")
		}
	})
}

func names(pods []Pod, seq []int) []string {
	out := make([]string, len(seq))
	for i, p := range seq {
		out[i] = pods[p].Name
	}
	return out
}

func testNodes() []Node {
	return []Node{
		{Name: "n1", CPUMilli: 8000, MemoryMiB: 1000, GPUs: 2, Model: "T4"},
		{Name: "n2", CPUMilli: 1500, MemoryMiB: 1000, GPUs: 2, Model: "G2"},
	}
}

// TestTieBreaks checks who gets a pod that ties on every node: three empty
// 8-card nodes, whole-card pods under packing (every empty node scores 25,
// then the node in use 49, so the first pod's node takes the next seven).
func TestTieBreaks(t *testing.T) {
	nodes := []Node{
		{Name: "a", CPUMilli: 64000, MemoryMiB: 1 << 20, GPUs: 8, Model: "G2"},
		{Name: "b", CPUMilli: 64000, MemoryMiB: 1 << 20, GPUs: 8, Model: "G2"},
		{Name: "c", CPUMilli: 64000, MemoryMiB: 1 << 20, GPUs: 8, Model: "G2"},
	}
	pods := []Pod{{Name: "p0", CPUMilli: 1000, MemoryMiB: 10, NumGPU: 1, GPUMilli: 1000}, {Name: "p1", CPUMilli: 1000, MemoryMiB: 10, NumGPU: 1, GPUMilli: 1000}}
	p, _ := policy.Get(policy.Packing)
	first := func(t *testing.T, ties TieBreak, seed int64) (firstNode int, sameNode bool) {
		r, err := Replay(Config{Nodes: nodes, Pods: pods, Policy: p, Seed: seed, Ties: ties})
		if err != nil {
			t.Fatal(err)
		}
		for _, pl := range r.Placements[1:8] {
			if pl.Node != r.Placements[0].Node {
				return r.Placements[0].Node, false
			}
		}
		return r.Placements[0].Node, true
	}
	tests := []struct {
		ties TieBreak
		// want is the node the first pod goes to for a seed (-1: any).
		want func(seed int64) int
	}{
		{TieFirst, func(int64) int { return 0 }},
		// The node first in a random order of the nodes drawn from the seed,
		// as the published simulator's random name prefixes order them.
		{TiePermutation, func(seed int64) int {
			return slices.Index(rand.New(rand.NewSource(seed)).Perm(len(nodes)), 0)
		}},
		{TieRandom, func(int64) int { return -1 }},
	}
	tests = append(tests, tests[1]) // the default
	tests[len(tests)-1].ties = ""
	for _, tt := range tests {
		t.Run(string(tt.ties), func(t *testing.T) {
			got := map[int]bool{}
			for seed := int64(42); seed < 72; seed++ {
				n, same := first(t, tt.ties, seed)
				if !same {
					t.Fatalf("seed %d: the next seven pods did not follow the first to node %d", seed, n)
				}
				if want := tt.want(seed); want >= 0 && n != want {
					t.Errorf("seed %d: first pod on node %d, want %d", seed, n, want)
				}
				got[n] = true
			}
			if spread := tt.ties != TieFirst; spread != (len(got) == len(nodes)) {
				t.Errorf("first pods over 30 seeds went to nodes %v", got)
			}
		})
	}
}

// TestReplayPlacementsRecheck replays small clusters under every policy and
// checks every placement from the CSV alone: no card, CPU or memory over
// its capacity, models respected, a failed pod fitting nowhere.
func TestReplayPlacementsRecheck(t *testing.T) {
	for _, name := range policy.Names() {
		for _, ties := range []TieBreak{TieFirst, TieRandom, TiePermutation} {
			t.Run(name+"/"+string(ties), func(t *testing.T) {
				p, _ := policy.Get(policy.Name(name))
				cfg := Config{Nodes: testNodes(), Pods: testPods(), Policy: p, Seed: 42, Workload: Seen, WorkloadCoverage: 0.95, Ties: ties}
				r, err := Replay(cfg)
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				if err := WritePlacements(&buf, &cfg, r); err != nil {
					t.Fatal(err)
				}
				recheck(t, cfg.Nodes, cfg.Pods, buf.String())
			})
		}
	}
}

func recheck(t *testing.T, nodes []Node, pods []Pod, placements string) {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(placements)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rows[0], ","); got != PlacementsHeader {
		t.Fatalf("header %q, want %q", got, PlacementsHeader)
	}
	type state struct {
		cpu, mem int64
		cards    []int64
		node     Node
	}
	st := map[string]*state{}
	for _, n := range nodes {
		st[n.Name] = &state{cpu: n.CPUMilli, mem: n.MemoryMiB, cards: make([]int64, n.GPUs), node: n}
	}
	byName := map[string]Pod{}
	for _, p := range pods {
		byName[p.Name] = p
	}
	atoi := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	fits := func(s *state, p Pod) bool {
		if s.cpu < p.CPUMilli || s.mem < p.MemoryMiB {
			return false
		}
		if p.NumGPU == 0 {
			return true
		}
		if len(p.Models) > 0 && !slices.Contains(p.Models, s.node.Model) {
			return false
		}
		n := int64(0)
		for _, used := range s.cards {
			if (p.GPUMilli == CardUnits && used == 0) || (p.GPUMilli < CardUnits && used+p.GPUMilli <= CardUnits) {
				n++
			}
		}
		return n >= p.NumGPU
	}
	for i, row := range rows[1:] {
		if atoi(row[0]) != int64(i) {
			t.Fatalf("row %d has seq %s", i, row[0])
		}
		p := byName[row[1]]
		if atoi(row[2]) != p.NumGPU || atoi(row[3]) != p.GPUMilli || atoi(row[4]) != p.CPUMilli || atoi(row[5]) != p.MemoryMiB {
			t.Fatalf("row %d %v does not match pod %+v", i, row, p)
		}
		if row[6] == "" {
			for _, s := range st {
				if fits(s, p) {
					t.Errorf("seq %d: %s failed although it fits %s", i, p.Name, s.node.Name)
				}
			}
			continue
		}
		s := st[row[6]]
		if s == nil || !fits(s, p) {
			t.Fatalf("seq %d: %s placed on %s where it does not fit", i, p.Name, row[6])
		}
		s.cpu -= p.CPUMilli
		s.mem -= p.MemoryMiB
		var cards []string
		if row[7] != "" {
			cards = strings.Split(row[7], "|")
		}
		if int64(len(cards)) != p.NumGPU {
			t.Fatalf("seq %d: %s got cards %q, want %d", i, p.Name, row[7], p.NumGPU)
		}
		for _, c := range cards {
			k := atoi(c)
			if p.GPUMilli == CardUnits && s.cards[k] != 0 {
				t.Fatalf("seq %d: whole card %d of %s in use", i, k, row[6])
			}
			s.cards[k] += p.GPUMilli
			if s.cards[k] > CardUnits {
				t.Fatalf("seq %d: card %d of %s over-committed", i, k, row[6])
			}
		}
	}
}

func TestMeasure(t *testing.T) {
	pods := []Pod{
		{Name: "share", NumGPU: 1, GPUMilli: 300},
		{Name: "whole", NumGPU: 1, GPUMilli: 1000},
		{Name: "multi", NumGPU: 2, GPUMilli: 1000},
		{Name: "cpu"},
	}
	ms := time.Millisecond
	// Capacity 2000. Arrived / allocated after each pod:
	//   share ok    300 / 300
	//   whole ok   1300 / 1300
	//   share fail 1600 / 1300   first failure at 80%
	//   cpu fail   1600 / 1300
	//   share ok   1900 / 1600   last at or below 100%: unallocated 100-80 = 20
	//   multi fail 3900          beyond 130% (2600): not counted
	r := &Result{Seed: 1, Capacity: 2000, Placements: []Placement{
		{Seq: 0, Pod: 0, Node: 0, Arrived: 300, Allocated: 300, Decision: 1 * ms},
		{Seq: 1, Pod: 1, Node: 0, Arrived: 1300, Allocated: 1300, Decision: 2 * ms},
		{Seq: 2, Pod: 0, Node: -1, Arrived: 1600, Allocated: 1300, Decision: 3 * ms},
		{Seq: 3, Pod: 3, Node: -1, Arrived: 1600, Allocated: 1300, Decision: 4 * ms},
		{Seq: 4, Pod: 0, Node: 1, Arrived: 1900, Allocated: 1600, Decision: 5 * ms},
		{Seq: 5, Pod: 2, Node: -1, Arrived: 3900, Allocated: 1600, Decision: 100 * ms},
	}}
	f := Measure(&Config{Pods: pods}, r)
	first := 80.0
	want := Figures{
		UnallocatedAt100: 20, UnallocatedAt130: 20, ArrivedAtFirstFailure: &first,
		FailedAt100: Failures{Shared: 1, CPUOnly: 1}, FailedAt130: Failures{Shared: 1, CPUOnly: 1},
		// 6 decisions in 115 ms; p50 of 1,2,3,4,5,100 ms is the 3rd (index (6-1)*50/100 = 2), p99 the 5th.
		DecisionsPerSecond: 6 / 0.115, DecisionP50Ms: 3, DecisionP99Ms: 5,
	}
	if diff := cmp.Diff(want, f.Figures, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); diff != "" {
		t.Errorf("figures (-want +got):\n%s", diff)
	}
	curve := Curve(r)
	if got := curve[80].Allocated; got != 65 { // after the second pod: 1300/2000
		t.Errorf("allocation at 80%% arrived = %v, want 65", got)
	}
}

func TestSummarize(t *testing.T) {
	a, b := 90.0, 94.0
	seeds := []SeedFigures{{Seed: 1, Figures: Figures{UnallocatedAt100: 4, ArrivedAtFirstFailure: &a}}, {Seed: 2, Figures: Figures{UnallocatedAt100: 6, ArrivedAtFirstFailure: &b}}, {Seed: 3, Figures: Figures{UnallocatedAt100: 5}}}
	var s Summary
	Summarize(&s, seeds, nil)
	// mean 5; sample std sqrt(((4-5)^2+(6-5)^2+0)/2) = 1. First failure over the two seeds that failed: 92, std sqrt(8/1) = 2.83.
	if s.Mean.UnallocatedAt100 != 5 || s.Std.UnallocatedAt100 != 1 {
		t.Errorf("mean %v std %v, want 5 and 1", s.Mean.UnallocatedAt100, s.Std.UnallocatedAt100)
	}
	if *s.Mean.ArrivedAtFirstFailure != 92 {
		t.Errorf("first failure mean %v, want 92", *s.Mean.ArrivedAtFirstFailure)
	}
}

func TestPlotSVG(t *testing.T) {
	var buf bytes.Buffer
	series := []Series{{Name: "fgd", Curve: []Point{{0, 0}, {100, 95}, {130, 96}}, Label: "x"}, {Name: "a<b", Curve: []Point{{0, 0}, {130, 99}}}}
	if err := PlotSVG(&buf, "t", series); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&buf)
	lines := 0
	var texts []string
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if e.Name.Local == "polyline" {
				lines++
			}
		case xml.CharData:
			texts = append(texts, string(e))
		}
	}
	if lines != 3 { // ideal + one per series
		t.Errorf("%d polylines, want 3", lines)
	}
	sort.Strings(texts)
	if !slices.Contains(texts, "a<b") {
		t.Errorf("legend %q lacks the escaped name a<b", texts)
	}
}

// TestReplayKeptAnswersChangeNothing: keeping each node's answer while the
// node is unchanged (results.Table, the extender's rule) places every pod
// where rating every node for every pod (Cold) does, under each policy.
func TestReplayKeptAnswersChangeNothing(t *testing.T) {
	var nodes []Node
	for i := range 6 {
		nodes = append(nodes, Node{Name: "n" + strconv.Itoa(i), CPUMilli: 16000, MemoryMiB: 1 << 16, GPUs: 1 + i%4, Model: []string{"T4", "G2"}[i%2]})
	}
	pods := testPods()
	for _, name := range policy.Names() {
		t.Run(name, func(t *testing.T) {
			p, _ := policy.Get(policy.Name(name))
			var runs [2][]Placement
			for i, cold := range []bool{false, true} {
				r, err := Replay(Config{Nodes: nodes, Pods: pods, Policy: p, Seed: 42, Workload: Seen, WorkloadCoverage: 0.95, Cold: cold})
				if err != nil {
					t.Fatal(err)
				}
				runs[i] = r.Placements
			}
			ignoreTime := cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Decision" }, cmp.Ignore())
			if diff := cmp.Diff(runs[1], runs[0], ignoreTime); diff != "" {
				t.Errorf("placements (-cold +kept):\n%s", diff)
			}
		})
	}
}
