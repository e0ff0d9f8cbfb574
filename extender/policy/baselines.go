package policy

import (
	"hash/fnv"
	"math"
)

// The baselines of the FGD paper (Weng et al., ATC'23), scored as its
// simulator scores them: whole scores on 0..100, so that close nodes tie.
const (
	// Random ranks nodes and cards in a pseudo-random order: a hash of the
	// node's name and state, so that it stays a pure function.
	Random Name = "random"
	// BestFit is the paper's BestFit: the node left with the least free CPU
	// and GPU (half each, against 128 cores and 8 cards), best-fit cards.
	BestFit Name = "bestfit"
	// Packing is the paper's GPU packing: a shared card in use first, then
	// free cards on a node in use, then an empty node; best-fit cards.
	Packing Name = "packing"
)

// The paper's largest node, against which BestFit measures what is left.
const (
	maxSpecCPU   = 128000 // millicores
	maxSpecCards = 8
)

func init() {
	register(&Policy{
		Name: Random,
		// The least hash over the cards alike to this one (same model, size
		// and use): Place tries one card of each such group, so the group's
		// chance goes with its size, and every card is equally likely.
		CardCost: func(n *Node, i int, share int64, _ *Workload) float64 {
			c := &n.Cards[i]
			h := 1.0
			for j := range n.Cards {
				if o := &n.Cards[j]; o.Total == c.Total && o.Used == c.Used && o.Model == c.Model && o.Healthy == c.Healthy {
					h = min(h, stateHash(n, j))
				}
			}
			return h
		},
		NodeScore: func(_, after *Node, _ *Workload) float64 {
			return stateHash(after, -1)
		},
	})
	register(&Policy{
		Name:     BestFit,
		CardCost: bestFitCard,
		// floor(100 * (1 - (cpuLeft/128 cores + gpuLeft/8 cards) / 2)).
		NodeScore: func(_, after *Node, _ *Workload) float64 {
			var cpu float64
			if after.Resources {
				cpu = float64(after.CPUFree) / maxSpecCPU
			}
			gpu := float64(after.Free()) / float64(maxSpecCards*cardSize(after))
			return math.Floor(100 * (1 - (cpu+gpu)/2))
		},
	})
	register(&Policy{
		Name:      Packing,
		CardCost:  bestFitCard,
		NodeScore: packingScore,
	})
}

// bestFitCard is gpushare's card choice: the card left with the least free.
func bestFitCard(n *Node, i int, share int64, _ *Workload) float64 {
	return float64(n.Cards[i].Free() - share)
}

// packingScore is the paper's GPU packing score, from the cards the pod
// takes (those whose use grew):
//   - on a node whose cards are all free: max(33 - free cards, free cards);
//   - when it takes free cards on a node in use: max(50 - free cards taken, 33);
//   - when it shares cards in use: max(100 - sum(free% of those cards)/10, 50);
//   - a pod without GPU: 0.
func packingScore(before, after *Node, _ *Workload) float64 {
	var allFree, took, tookFree int
	var freePct int64
	for i := range before.Cards {
		b := &before.Cards[i]
		if !b.Healthy {
			continue
		}
		if b.Used == 0 {
			allFree++
		}
		if after.Cards[i].Used > b.Used {
			took++
			if b.Used == 0 {
				tookFree++
			}
			if b.Total > 0 {
				freePct += b.Free() * 100 / b.Total
			}
		}
	}
	switch {
	case took == 0:
		return 0
	case allFree == len(healthy(before)):
		return float64(max(33-allFree, allFree))
	case tookFree > 0:
		return float64(max(50-tookFree, 33))
	}
	return float64(max(100-freePct/10, 50))
}

func healthy(n *Node) []int {
	var out []int
	for i := range n.Cards {
		if n.Cards[i].Healthy {
			out = append(out, i)
		}
	}
	return out
}

// stateHash is a number in [0, 1) drawn from the node's name and state (and
// card pos, if not -1): the same state always draws the same number.
func stateHash(n *Node, pos int) float64 {
	h := fnv.New64a()
	var b [8]byte
	put := func(v int64) {
		for i := range b {
			b[i] = byte(v >> (8 * i))
		}
		h.Write(b[:])
	}
	h.Write([]byte(n.Name))
	put(int64(pos))
	put(n.CPUFree)
	put(n.MemFree)
	for i := range n.Cards {
		put(n.Cards[i].Used)
	}
	return float64(h.Sum64()>>11) / (1 << 53)
}
