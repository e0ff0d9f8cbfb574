package policy

import (
	"math"
	"math/rand"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpupack/gpupack/contract"
)

// TestUnfillable pins unfillable's formula (its doc comment), with I the
// idle GPU, ℓ what a shape leaves, A the average, B the best and σ̄ the mean
// scarcity: unfillable = (α·A + 0.7·B) / (α + 0.7), α = 0.3·σ̄; without
// model limits σ̄ = 1 and unfillable = 0.3·A + 0.7·B.
func TestUnfillable(t *testing.T) {
	share300 := Shape{Share: 300, Cards: 1, CPUMilli: 4000}
	whole := Shape{Cards: 1, CPUMilli: 1000}
	t4whole := Shape{Cards: 1, Models: "T4"}
	tests := []struct {
		name   string
		node   *Node
		counts map[Shape]int64
		cards  map[string]int64
		want   float64
	}{{
		// I = 2000. 300s: 3 per card, 6 by cards; CPU 10000/4000 = 2 pods:
		// ℓ = 2000-600 = 1400 = A = B.
		name: "CPU bounds the pods", node: milliNode(10000, 0, 0),
		counts: map[Shape]int64{share300: 1}, want: 1400,
	}, {
		// I = 2000 and no CPU free, but a shape that asks no CPU is bounded
		// by the cards alone: 2 whole cards, ℓ = 0.
		name: "a shape that asks no CPU has no CPU bound", node: milliNode(0, 0, 0),
		counts: map[Shape]int64{{Cards: 1}: 1}, want: 0,
	}, {
		// I = 400+1000 = 1400. 300s: card 0 takes 1, card 1 takes 3: 4 pods,
		// ℓ = 1400-1200 = 200; CPU allows 25.
		name: "room per card bounds the pods", node: milliNode(100000, 600, 0),
		counts: map[Shape]int64{share300: 1}, want: 200,
	}, {
		// I = 1400. Whole cards: only card 1 is unused: ℓ = 1400-1000 = 400
		// (weight 1/2); 300s as above: ℓ = 200 (weight 1/2).
		// A = (400+200)/2 = 300, B = 200: 0.3·300 + 0.7·200 = 230.
		name: "shapes weighted by frequency, blended with the best", node: milliNode(100000, 600, 0),
		counts: map[Shape]int64{share300: 1, whole: 1}, want: 230,
	}, {
		// I = 2000. A T4-only whole-card shape on a G2 node: no card it may
		// use, ℓ = 2000; with T4 2 of 10 cards, σ = 10/2 = 5. The other
		// shape fills the node: ℓ = 0, σ = 1. Weights 1/2 each:
		// A = (5·½·2000 + 1·½·0) / (5·½ + 1·½) = 5000/3 = 1666.67, B = 0;
		// σ̄ = 3/1, α = 0.9: (0.9·1666.67 + 0.7·0) / 1.6 = 937.5.
		name: "a shape limited to a scarce model weighs more", node: milliNode(100000, 0, 0),
		counts: map[Shape]int64{t4whole: 1, whole: 1}, cards: map[string]int64{"T4": 2, "G2": 8}, want: 937.5,
	}, {
		// I = 2000, and the only shape (T4 only, σ = 5) can use none of it:
		// A = 5·1·2000 / (5·1) = 2000, B = 2000, α = 0.3·5 = 1.5:
		// (1.5·2000 + 0.7·2000) / 2.2 = 2000, the whole idle GPU, no more.
		name: "never more than the idle GPU", node: milliNode(100000, 0, 0),
		counts: map[Shape]int64{t4whole: 1}, cards: map[string]int64{"T4": 2, "G2": 8}, want: 2000,
	}, {
		// I = 1400. A rare shape (under 1% of the pods) counts in A: 300s
		// leave 200 (weight 199/200), whole cards 400 (1/200).
		// A = (199·200 + 400)/200 = 201, B = 200: 0.3·201 + 0.7·200 = 200.3.
		name: "a rare shape counts in the average", node: milliNode(100000, 600, 0),
		counts: map[Shape]int64{share300: 199, whole: 1}, want: 200.3,
	}, {
		// I = 2000. A rare shape that would fill the node whole is not in
		// B: whole cards (1/200) leave 0, 300s (199/200) 200 (3 per card:
		// 1800 of 2000). A = 199·200/200 = 199, B = 200:
		// 0.3·199 + 0.7·200 = 199.7.
		name: "a rare shape that fills the node does not count", node: milliNode(100000, 0, 0),
		counts: map[Shape]int64{share300: 199, whole: 1}, want: 199.7,
	}, {
		// I = 1400. Two 300-shapes that the CPU does not limit (1000m and
		// 2000m: 4 pods need 8000m of 100000m), 3/400 of the pods each,
		// leave the same ℓ = 200: together 6/400 ≥ 1%, so common. Whole
		// cards (394/400) leave 400. A = (6·200 + 394·400)/400 = 397,
		// B = 200: 0.3·397 + 0.7·200 = 259.1.
		name: "shapes the CPU does not limit are common together", node: milliNode(100000, 600, 0),
		counts: map[Shape]int64{{Share: 300, Cards: 1, CPUMilli: 1000}: 3, {Share: 300, Cards: 1, CPUMilli: 2000}: 3, whole: 394},
		want:   259.1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorkload(tt.counts, 1)
			w.SetCapacity(byModel(tt.cards))
			if got := unfillable(tt.node, w, -1, 0); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("unfillable = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestUnfillableBounded checks on random nodes and workloads that the
// unfillable GPU is never negative and never more than the idle GPU.
func TestUnfillableBounded(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	for trial := range 2000 {
		n, w, pos, extra := randomCase(rng)
		idle := float64(idleWith(n, pos, extra))
		if got := unfillable(n, w, pos, extra); got < 0 || got > idle*(1+1e-12) {
			t.Fatalf("trial %d: unfillable %v, idle GPU %v\nnode %+v\nshapes %+v", trial, got, idle, n, w.Shapes)
		}
	}
}

// TestRatingMeasuresAgree checks on random nodes and workloads that what a
// Rating works out from the measures it keeps is exactly what the measures
// give computed afresh: fill's unfillable GPU with a share on each card
// (from the room measured once) and after shares on several cards with CPU
// taken, and FGD's fragmentation of the node as it is.
func TestRatingMeasuresAgree(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	for trial := range 3000 {
		n, w, _, _ := randomCase(rng)
		rt := rate(n, &Request{}, w, nil)
		if got, want := rt.unfillable(), unfillable(n, w, -1, 0); got != want {
			t.Fatalf("trial %d: unfillable kept %v, afresh %v\nnode %+v", trial, got, want, n)
		}
		if got, want := rt.fragmentation(), Fragmentation(n, w); got != want {
			t.Fatalf("trial %d: fragmentation kept %v, afresh %v\nnode %+v", trial, got, want, n)
		}
		for i := range n.Cards {
			extra := rng.Int63n(n.Cards[i].Total + 2)
			if got, want := rt.unfillableWith(i, extra), unfillable(n, w, i, extra); got != want {
				t.Fatalf("trial %d: %d more units on card %d: unfillable from the room %v, afresh %v\nnode %+v", trial, extra, i, got, want, n)
			}
		}
		after := n.Clone()
		for i := range after.Cards {
			if rng.Intn(3) == 0 {
				after.Cards[i].Used += rng.Int63n(after.Cards[i].Total + 1)
			}
		}
		after.CPUFree -= int64(rng.Intn(4000))
		if got, want := rt.unfillableAfter(after), unfillable(after, w, -1, 0); got != want {
			t.Fatalf("trial %d: unfillable after, from the room %v, afresh %v\nbefore %+v\nafter %+v", trial, got, want, n, after)
		}
		rt.done()
	}
}

// TestPlaceMeasuredAgrees checks that rating a node from the measures kept
// for it gives what rating it afresh gives, for requests of several shapes
// in turn, and that measures kept at another Version of the node, or under
// another workload estimate, are not used. The requests draw their shares
// from a few, more than a node keeps the card costs of, under a policy
// that may change (Random's card costs read the request): a card cost kept
// for another share, policy or state of the node would show.
func TestPlaceMeasuredAgrees(t *testing.T) {
	rng := rand.New(rand.NewSource(17))
	for trial := range 1000 {
		n, w, _, _ := randomCase(rng)
		n.Version = uint64(trial)
		other := NewWorkload(map[Shape]int64{{Share: 5, Cards: 1}: 1}, 1)
		shares := make([]int64, costShares+2)
		for i := range shares {
			shares[i] = 1 + rng.Int63n(80)
		}
		var m Measures
		policies := []Name{Fill, FGD, Binpack, Random}
		p := mustGet(t, policies[rng.Intn(len(policies))])
		for k := range 16 {
			if k == 10 {
				p = mustGet(t, policies[rng.Intn(len(policies))])
			}
			r := &Request{Containers: []contract.ContainerRequest{{Name: "c0", Mem: shares[rng.Intn(len(shares))]}}, CPUMilli: int64(rng.Intn(4000)), Salt: rng.Uint64()}
			if rng.Intn(4) == 0 {
				r.Containers = append(r.Containers, contract.ContainerRequest{Index: 1, Name: "c1", Mem: 1 + rng.Int63n(20)})
			}
			ww := w
			switch k {
			case 8: // the node changes
				i := rng.Intn(len(n.Cards))
				n.Cards[i].Used = rng.Int63n(n.Cards[i].Total + 1)
				n.Version += 1000
			case 12:
				ww = other
			}
			wantD, wantU := Place(n, r, p, ww)
			gotD, gotU := PlaceMeasured(n, r, p, ww, &m)
			if (wantU == nil) != (gotU == nil) || wantD.Score != gotD.Score || !cmp.Equal(wantD.Allocation(), gotD.Allocation()) && wantU == nil {
				t.Fatalf("trial %d, request %d (%s): from kept measures %+v %v, afresh %+v %v\nnode %+v", trial, k, p.Name, gotD, gotU, wantD, wantU, n)
			}
		}
	}
}

// TestFillScore pins the score: (K·ΔU + 0.5·ΔF - 1e-4·I after) / 1000,
// with U unfillable, K = α + 0.7 and F FGD's fragmentation, for a 500 share
// on a node of two empty G2 cards of 1000 (it goes to card 0; I after:
// 1500).
func TestFillScore(t *testing.T) {
	t4whole := Shape{Cards: 1, Models: "T4"}
	whole := Shape{Cards: 1, CPUMilli: 1000}
	tests := []struct {
		name   string
		counts map[Shape]int64
		cards  map[string]int64
		want   float64
	}{{
		// Whole cards only, K = 1. U: before 0 (two whole cards), after
		// ℓ = 1500-1000 = 500 = A = B, so 500. F: before 0, after card 0's
		// 500 cannot take a whole card: 500.
		// (1·(0-500) + 0.5·(0-500) - 0.15) / 1000 = -0.75015.
		name:   "no model limits",
		counts: map[Shape]int64{whole: 1}, want: -0.75015,
	}, {
		// Half the pods T4-only (σ = 5, no T4 here), half whole cards: σ̄ = 3,
		// α = 0.9, K = 1.6. U before: A = 1666.67, B = 0, 937.5 (TestUnfillable).
		// After: A = (5·½·1500 + ½·500)/3 = 1333.33, B = 500:
		// (0.9·1333.33 + 0.7·500)/1.6 = 968.75. K·ΔU = 1.6·(937.5-968.75) = -50
		// (= 0.9·ΔA + 0.7·ΔB = 300 - 350). F (no scarcity): before
		// ½·2000 + ½·0 = 1000, after ½·1500 + ½·500 = 1000.
		// (-50 + 0.5·0 - 0.15) / 1000 = -0.05015.
		name:   "a scarce-model shape counts its loss σ times",
		counts: map[Shape]int64{t4whole: 1, whole: 1}, cards: map[string]int64{"T4": 2, "G2": 8}, want: -0.05015,
	}}
	p, _ := Get(Fill)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorkload(tt.counts, 1)
			w.SetCapacity(byModel(tt.cards))
			d, u := Place(milliNode(100000, 0, 0), reqOf(share(500)), p, w)
			if u != nil {
				t.Fatal(u.Message(contract.GiB))
			}
			if diff := cmp.Diff(contract.Allocation{0: {0: 500}}, d.Allocation()); diff != "" {
				t.Errorf("allocation (-want +got):\n%s", diff)
			}
			if math.Abs(d.Score-tt.want) > 1e-12 {
				t.Errorf("score = %v, want %v", d.Score, tt.want)
			}
		})
	}
}

func TestScarcity(t *testing.T) {
	cards := map[string]int64{"T4": 2, "G2": 8}
	tests := []struct {
		models []string
		cards  map[string]int64
		want   float64
	}{
		{nil, cards, 1},
		{[]string{"T4"}, nil, 1},
		{[]string{"T4"}, cards, 5},       // 10 / 2
		{[]string{"T4", "G2"}, cards, 1}, // 10 / 10
		{[]string{"A100"}, cards, 1},     // none in the cluster: no weight to give
	}
	for _, tt := range tests {
		if got := scarcity(byModel(tt.cards), tt.models); got != tt.want {
			t.Errorf("scarcity(%v, %v) = %v, want %v", tt.cards, tt.models, got, tt.want)
		}
	}
}

func TestFillKeepsScarceModelsForTheirPods(t *testing.T) {
	// Half the pods need a T4 card (2 of the cluster's 10 cards), half take
	// 500 anywhere. A 500 pod should go to the G2 node, not the T4 one.
	w := NewWorkload(map[Shape]int64{{Cards: 1, Models: "T4"}: 1, {Share: 500, Cards: 1}: 1}, 1)
	w.SetCapacity(byModel(map[string]int64{"T4": 2, "G2": 8}))
	t4, g2 := milliNode(100000, 0, 0), milliNode(100000, 0, 0)
	for i := range t4.Cards {
		t4.Cards[i].Model = "T4"
	}
	p, _ := Get(Fill)
	r := reqOf(share(500))
	a, _ := Place(t4, r, p, w)
	b, _ := Place(g2, r, p, w)
	if a.Score >= b.Score {
		t.Errorf("T4 node scores %v, G2 node %v: want the G2 node preferred", a.Score, b.Score)
	}
}

// byModel is a capacity of one node per model holding all its cards, with
// no CPU or memory known: what scarcity reads.
func byModel(cards map[string]int64) Capacity {
	c := Capacity{}
	for m, n := range cards {
		c[NodeClass{Model: m, Cards: int(n)}]++
	}
	return c
}

func TestRarity(t *testing.T) {
	// 10 nodes of 8 G2 cards, 96 CPUs; 1 of 8 G3 cards, 128 CPUs; 20 of 2
	// T4 cards, 104 CPUs: 80 + 8 + 40 = 128 cards.
	capacity := Capacity{
		{Model: "G2", Cards: 8, CPUMilli: 96000, MemMiB: 393216}:  10,
		{Model: "G3", Cards: 8, CPUMilli: 128000, MemMiB: 786432}: 1,
		{Model: "T4", Cards: 2, CPUMilli: 104000, MemMiB: 393216}: 20,
	}
	node := func(cards int, cpu, mem int64, resources bool) *Node {
		n := &Node{Resources: resources, CPUMilli: cpu, MemMiB: mem, CPUFree: cpu, MemFree: mem}
		for i := range cards {
			n.Cards = append(n.Cards, Card{Index: i, Total: 1000, Healthy: true})
		}
		return n
	}
	card := reqOf(contract.ContainerRequest{Count: 1})
	eight := reqOf(contract.ContainerRequest{Count: 8})
	t4 := reqOf(contract.ContainerRequest{Count: 1})
	t4.Models = []string{"T4"}
	big := reqOf(contract.ContainerRequest{Count: 8})
	big.CPUMilli = 120000
	tests := []struct {
		name     string
		capacity Capacity
		node     *Node
		pod      *Request
		want     float64 // ρ
	}{
		// Any node takes a card. At least 8 cards and 96 CPUs: G2 and
		// G3, 88 of 128 cards.
		{"the commonest large node", capacity, node(8, 96000, 393216, true), card, 128.0 / 88},
		// At least 8 cards, 128 CPUs, 768 GiB: G3 alone.
		{"the largest node", capacity, node(8, 128000, 786432, true), card, 128.0 / 8},
		// At least 2 cards and 104 CPUs: T4 and G3.
		{"fewer cards, more CPU", capacity, node(2, 104000, 393216, true), card, 128.0 / 48},
		// CPU and memory unknown: every node with at least 8 cards.
		{"resources unknown", capacity, node(8, 128000, 786432, false), card, 128.0 / 88},
		// Smaller than every node: all cards.
		{"a small node", capacity, node(1, 8000, 32768, true), card, 1},
		// 8 cards: G2 and G3 could take it (88 cards), G3 is larger.
		{"a pod of 8 cards", capacity, node(8, 128000, 786432, true), eight, 88.0 / 8},
		// Only G3 takes a pod of 120 CPUs: opening it costs nothing.
		{"the only node that takes the pod", capacity, node(8, 128000, 786432, true), big, 1},
		// A T4 pod: only T4 nodes (40 cards), all alike.
		{"a model-limited pod", capacity, node(2, 104000, 393216, true), t4, 1},
		// Larger than every known node: nothing to compare with.
		{"larger than the cluster", capacity, node(16, 256000, 1<<21, true), card, 1},
		{"no capacity known", nil, node(8, 128000, 786432, true), card, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorkload(map[Shape]int64{{Cards: 1}: 1}, 1)
			w.SetCapacity(tt.capacity)
			if got, want := w.rarity(tt.node, tt.pod), math.Log(tt.want); math.Abs(got-want) > 1e-12 {
				t.Errorf("rarity = %v, want ln %v = %v", got, tt.want, want)
			}
		})
	}
	// Nodes of one kind whose allocatable differs by what their kubelets
	// reserve are one class: a node a little larger than its kind's other
	// node is not rarer than they are (ρ 24/16, not 24/8).
	alike := Capacity{}
	alike.Add("G2", 8, 95800, 392000)
	alike.Add("G2", 8, 95900, 392100)
	alike.Add("T4", 8, 32000, 131072)
	w := NewWorkload(map[Shape]int64{{Cards: 1}: 1}, 1)
	w.SetCapacity(alike)
	if got := w.rarity(node(8, 95900, 392100, true), card); math.Abs(got-math.Log(24.0/16)) > 1e-12 {
		t.Errorf("rarity of a node of a kind reserved differently = %v, want ln 1.5", got)
	}
	var none *Workload
	if got := none.rarity(node(8, 128000, 786432, true), card); got != 0 {
		t.Errorf("rarity without a workload = %v, want 0", got)
	}
}

// TestFillOpensTheCommonestNodeFirst: two empty nodes, a common one of 96
// CPUs and one of the cluster's two of 128. A pod that asks more CPU than
// most leaves less GPU stranded by CPU on the larger node (0.03 card
// here), but fill opens the common one: the larger are the only place
// for pods that need all of one. Once both are open, the opening cost is
// gone and the larger node's spare CPU wins again.
func TestFillOpensTheCommonestNodeFirst(t *testing.T) {
	capacity := Capacity{
		{Model: "G2", Cards: 8, CPUMilli: 96000, MemMiB: 393216}:  30,
		{Model: "G3", Cards: 8, CPUMilli: 128000, MemMiB: 786432}: 2,
	}
	// Most pods ask little CPU; one in ten asks 12 CPUs for a whole card.
	w := NewWorkload(map[Shape]int64{{Cards: 1, CPUMilli: 12000}: 1, {Share: 500, Cards: 1, CPUMilli: 2000}: 9}, 1)
	w.SetCapacity(capacity)
	// node is an 8-card node with cards whole cards used by pods of 12
	// CPUs each.
	node := func(model string, cpu, mem int64, cards int) *Node {
		n := &Node{Name: model, Resources: true, CPUMilli: cpu, MemMiB: mem, CPUFree: cpu - int64(cards)*12000, MemFree: mem}
		for i := range 8 {
			n.Cards = append(n.Cards, Card{Index: i, Model: model, Total: 1000, Healthy: true})
		}
		for i := range cards {
			n.Cards[i].Used = 1000
		}
		return n
	}
	p, _ := Get(Fill)
	r := reqOf(contract.ContainerRequest{Count: 1})
	r.CPUMilli = 16000
	score := func(n *Node) float64 {
		d, unfit := Place(n, r, p, w)
		if unfit != nil {
			t.Fatalf("%s: %v", n.Name, unfit.Message(contract.GiB))
		}
		return d.Score
	}
	// Empty: the 96-CPU node can then take 80/12 = 6 more of the 12-CPU
	// pods on its 7 free cards, the 128-CPU one 9.
	if g2, g3 := score(node("G2", 96000, 393216, 0)), score(node("G3", 128000, 786432, 0)); g3 >= g2 {
		t.Errorf("empty nodes: the 128-CPU node scores %v, the 96-CPU one %v: want the common one opened first", g3, g2)
	}
	// One card used on each: 68/12 = 5 pods on 6 cards against 8.
	if g2, g3 := score(node("G2", 96000, 393216, 1)), score(node("G3", 128000, 786432, 1)); g3 <= g2 {
		t.Errorf("open nodes: the 128-CPU node scores %v, the 96-CPU one %v: want the one with CPU to spare", g3, g2)
	}
}
