package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpupack/gpupack/contract"
)

// milliNode is a node of 1000-unit cards (thousandths, as the trace counts)
// with known CPU.
func milliNode(cpu int64, used ...int64) *Node {
	n := &Node{Name: "n", Resources: true, CPUFree: cpu, MemFree: 1 << 20}
	for i, u := range used {
		n.Cards = append(n.Cards, Card{Index: i, Model: "G2", Total: 1000, Used: u, Healthy: true})
	}
	return n
}

func TestBaselineScores(t *testing.T) {
	withCPU := func(r *Request, cpu int64) *Request { r.CPUMilli = cpu; return r }
	tests := []struct {
		name   string
		policy Name
		node   *Node
		req    *Request
		score  float64
		alloc  contract.Allocation
	}{{
		// cpu left 96000-4000 = 92000: 92/128 = 0.71875; gpu left 8000-500 = 7500: 7500/8000 = 0.9375.
		// floor(100 * (1 - (0.71875+0.9375)/2)) = floor(17.1875) = 17.
		name: "bestfit on an empty node", policy: BestFit,
		node: milliNode(96000, 0, 0, 0, 0, 0, 0, 0, 0), req: withCPU(reqOf(share(500)), 4000),
		score: 17, alloc: contract.Allocation{0: {0: 500}},
	}, {
		// best-fit card: card 0 (700 free -> 200). cpu 4000/128000 = 0.03125; gpu (200+1000)/8000 = 0.15.
		// floor(100 * (1 - 0.18125/2)) = floor(90.9375) = 90.
		name: "bestfit on a used node", policy: BestFit,
		node: milliNode(8000, 300, 0), req: withCPU(reqOf(share(500)), 4000),
		score: 90, alloc: contract.Allocation{0: {0: 500}},
	}, {
		// all 8 cards free: max(33-8, 8) = 25.
		name: "packing on an empty node", policy: Packing,
		node: milliNode(96000, 0, 0, 0, 0, 0, 0, 0, 0), req: reqOf(share(500)),
		score: 25, alloc: contract.Allocation{0: {0: 500}},
	}, {
		// shares card 0 (300 free = 30%): 100 - 30/10 = 97.
		name: "packing shares a used card", policy: Packing,
		node: milliNode(96000, 700, 0), req: reqOf(share(200)),
		score: 97, alloc: contract.Allocation{0: {0: 200}},
	}, {
		// 500 fits only the free card 1 of a node in use: max(50-1, 33) = 49.
		name: "packing takes a free card of a used node", policy: Packing,
		node: milliNode(96000, 700, 0), req: reqOf(share(500)),
		score: 49, alloc: contract.Allocation{0: {1: 500}},
	}, {
		name: "packing gives a pod without GPU nothing", policy: Packing,
		node: milliNode(96000, 700, 0), req: withCPU(&Request{}, 1000),
		score: 0, alloc: contract.Allocation{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := Get(tt.policy)
			d, u := Place(tt.node, tt.req, p, nil)
			if u != nil {
				t.Fatal(u.Message(contract.GiB))
			}
			if d.Score != tt.score {
				t.Errorf("score = %v, want %v", d.Score, tt.score)
			}
			if diff := cmp.Diff(tt.alloc, d.Allocation()); diff != "" {
				t.Errorf("allocation (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRandomDrawsAfreshForEachPod(t *testing.T) {
	p, _ := Get(Random)
	if !p.PerPod {
		t.Fatal("random must be PerPod: its answer for one pod is not another's")
	}
	place := func(n *Node, salt uint64) Decision {
		r := reqOf(share(100))
		r.Salt = salt
		d, u := Place(n, r, p, nil)
		if u != nil {
			t.Fatal(u.Message(contract.GiB))
		}
		return d
	}
	a, b := place(milliNode(8000, 300, 0, 0), 7), place(milliNode(8000, 300, 0, 0), 7)
	if a.Score != b.Score || a.Score < 0 || a.Score >= 1 {
		t.Errorf("scores %v and %v for one pod: want equal, in [0, 1)", a.Score, b.Score)
	}

	// Every card that fits is equally likely: cards 1 and 2 are alike
	// (free) and together should win 2/3 of 3,000 pods (sd 26).
	wins := map[int]int{}
	for salt := range uint64(3000) {
		for c := range place(milliNode(8000, 300, 0, 0), salt).Allocation()[0] {
			wins[c]++
		}
	}
	if free := wins[1] + wins[2]; free < 1800 || free > 2200 {
		t.Errorf("free cards won %d of 3000 pods, want about 2000 (%v)", free, wins)
	}

	// Every node is equally likely for each pod, whatever the last pod
	// drew: among three nodes in the same state, each wins about 1,000 of
	// 3,000 pods, and the next pod goes to the same node about a third of
	// the time (a draw that stuck to the node's state would repeat it).
	nodes := []*Node{milliNode(8000, 0, 0), milliNode(8000, 0, 0), milliNode(8000, 0, 0)}
	for i, n := range nodes {
		n.Name = "node-" + string(rune('a'+i))
	}
	won, repeats, last := map[int]int{}, 0, -1
	for salt := range uint64(3000) {
		best, score := -1, -1.0
		for i, n := range nodes {
			if d := place(n, salt); d.Score > score {
				best, score = i, d.Score
			}
		}
		won[best]++
		if best == last {
			repeats++
		}
		last = best
	}
	for i := range nodes {
		if won[i] < 850 || won[i] > 1150 {
			t.Errorf("node %d won %d of 3000 pods, want about 1000 (%v)", i, won[i], won)
		}
	}
	if repeats < 850 || repeats > 1150 {
		t.Errorf("the next pod went to the same node %d times of 3000, want about 1000", repeats)
	}
}
