package policy

import (
	"math"
	"testing"
)

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
		// 300s: 3 per card, 6 by cards; CPU 10000/4000 = 2 pods: 600 used of 2000 idle.
		name: "CPU bounds the pods", node: milliNode(10000, 0, 0),
		counts: map[Shape]int64{share300: 1}, want: 1400,
	}, {
		// 300s: card 0 (400 free) takes 1, card 1 takes 3: 4 pods, 1200 of 1400; CPU allows 25.
		name: "room per card bounds the pods", node: milliNode(100000, 600, 0),
		counts: map[Shape]int64{share300: 1}, want: 200,
	}, {
		// whole cards: only card 1 is free: 1000 used of 1400 idle -> 400 (weight 1/2);
		// 300s as above: 200 (weight 1/2). Average (400+200)/2 = 300, best 200:
		// 0.3*300 + 0.7*200 = 230.
		name: "shapes weighted by frequency, blended with the best", node: milliNode(100000, 600, 0),
		counts: map[Shape]int64{share300: 1, whole: 1}, want: 230,
	}, {
		// A T4-only whole-card shape on a G2 node: no card it may use, all 2000 idle.
		// With T4 2 of 10 cards, it weighs 10/2 = 5 times: (5*2000 + 1*0) / (1+1) = 5000;
		// the whole-card shape fills the node (best 0): 0.3*5000 = 1500.
		name: "a shape limited to a scarce model weighs more", node: milliNode(100000, 0, 0),
		counts: map[Shape]int64{t4whole: 1, whole: 1}, cards: map[string]int64{"T4": 2, "G2": 8}, want: 1500,
	}, {
		// A rare shape (under 1% of the pods) counts in the average: 300s leave
		// 200 (weight 199/200), whole cards 400 (1/200). Average
		// (199*200 + 400)/200 = 201, best 200:
		// 0.3*201 + 0.7*200 = 200.3.
		name: "a rare shape counts in the average", node: milliNode(100000, 600, 0),
		counts: map[Shape]int64{share300: 199, whole: 1}, want: 200.3,
	}, {
		// A rare shape that would fill the node whole does not zero the best:
		// whole cards (1/200) leave 0 of two free cards, 300s (199/200) 200 each
		// (3 per card: 1800 of 2000). Average 199*200/200 = 199, best 200:
		// 0.3*199 + 0.7*200 = 199.7.
		name: "a rare shape that fills the node does not count", node: milliNode(100000, 0, 0),
		counts: map[Shape]int64{share300: 199, whole: 1}, want: 199.7,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorkload(tt.counts, 1)
			w.SetCapacity(tt.cards)
			if got := unfillable(tt.node, w, -1, 0); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("unfillable = %v, want %v", got, tt.want)
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
		if got := scarcity(tt.cards, tt.models); got != tt.want {
			t.Errorf("scarcity(%v, %v) = %v, want %v", tt.cards, tt.models, got, tt.want)
		}
	}
}

func TestFillKeepsScarceModelsForTheirPods(t *testing.T) {
	// Half the pods need a T4 card (2 of the cluster's 10 cards), half take
	// 500 anywhere. A 500 pod should go to the G2 node, not the T4 one.
	w := NewWorkload(map[Shape]int64{{Cards: 1, Models: "T4"}: 1, {Share: 500, Cards: 1}: 1}, 1)
	w.SetCapacity(map[string]int64{"T4": 2, "G2": 8})
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
