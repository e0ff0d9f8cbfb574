package policy

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/gpupack/gpupack/contract"
)

// benchWorkload is a workload like the openb trace's: shares of one card,
// whole cards (1, 2, 4, 8), a few shapes limited to a model, and pods
// without GPU, with CPU requests spread over 1-32 cores.
func benchWorkload() *Workload {
	rng := rand.New(rand.NewSource(3))
	counts := map[Shape]int64{}
	for range 60 {
		s := Shape{Cards: 1, CPUMilli: int64(1000 * (1 + rng.Intn(32)))}
		switch rng.Intn(10) {
		case 0, 1:
			s.Cards = []int{1, 2, 4, 8}[rng.Intn(4)]
		case 2:
			s.Cards = 0
		default:
			s.Share = int64(100 * (1 + rng.Intn(9)))
		}
		if rng.Intn(8) == 0 {
			s.Models = []string{"T4", "V100M16"}[rng.Intn(2)]
		}
		counts[s] += int64(1 + rng.Intn(100))
	}
	w := NewWorkload(counts, 0.99)
	w.SetCapacity(byModel(map[string]int64{"G2": 5000, "T4": 800, "V100M16": 400}))
	return w
}

// benchNode is an 8-card node of 1000 units per card, cards used as given.
func benchNode(used ...int64) *Node {
	n := &Node{Name: "n", Resources: true, CPUFree: 64000, MemFree: 1 << 20}
	for i, u := range used {
		n.Cards = append(n.Cards, Card{Index: i, Model: "G2", Total: 1000, Used: u, Healthy: true})
	}
	return n
}

// BenchmarkPlace rates one node for a pod: the fast path (one share on one
// card) and the search (two containers, and a whole card beside a share).
func BenchmarkPlace(b *testing.B) {
	w := benchWorkload()
	n := benchNode(0, 300, 500, 500, 1000, 0, 700, 200)
	pods := map[string]*Request{
		"one-share": {Containers: []contract.ContainerRequest{{Name: "c0", Mem: 300}}, CPUMilli: 4000},
		"two-shares": {Containers: []contract.ContainerRequest{
			{Index: 0, Name: "c0", Mem: 500}, {Index: 1, Name: "c1", Mem: 400},
		}, CPUMilli: 4000},
		"whole-and-share": {Containers: []contract.ContainerRequest{
			{Index: 0, Name: "c0", Count: 1}, {Index: 1, Name: "c1", Mem: 200},
		}, CPUMilli: 8000},
	}
	for _, name := range []Name{Fill, FGD, Binpack} {
		p, _ := Get(name)
		for _, pod := range []string{"one-share", "two-shares", "whole-and-share"} {
			r := pods[pod]
			b.Run(fmt.Sprintf("%s/%s", name, pod), func(b *testing.B) {
				for range b.N {
					if _, u := Place(n, r, p, w); u != nil {
						b.Fatal(u.Message(contract.GiB))
					}
				}
			})
		}
	}
}

// BenchmarkUnfillable is fill's measure on one node, against the workload.
func BenchmarkUnfillable(b *testing.B) {
	w := benchWorkload()
	n := benchNode(0, 300, 500, 500, 1000, 0, 700, 200)
	var sink float64
	for range b.N {
		sink += unfillable(n, w, 1, 300)
	}
	_ = sink
}

// BenchmarkUnfillableWith80 is fill's measure of a share on each card of a
// node of 8 cards of 80 units, half used, against a workload of the
// 80 shares of 1 to 80 units (BenchmarkHTTP5000's), from the room measured
// once, as placeOne rates the cards.
func BenchmarkUnfillableWith80(b *testing.B) {
	counts := map[Shape]int64{}
	for u := int64(1); u <= 80; u++ {
		counts[Shape{Share: u, Cards: 1}] = 1
	}
	w := NewWorkload(counts, 1)
	n := &Node{Name: "n", Resources: true, CPUFree: 32000, MemFree: 1 << 20}
	for i, u := range []int64{0, 17, 0, 55, 0, 3, 0, 71} {
		n.Cards = append(n.Cards, Card{Index: i, Model: "A100", Total: 80, Used: u, Healthy: true})
	}
	rt := rate(n, &Request{}, w, nil)
	defer rt.done()
	var sink float64
	for range b.N {
		for i := range n.Cards {
			sink += rt.unfillableWith(i, 5)
		}
	}
	_ = sink
}
