package policy

import (
	"encoding/binary"
	"hash/fnv"
	"math"
)

// The baselines of the FGD paper (Weng et al., ATC'23), scored as its
// simulator scores them: whole scores on 0..100, so that close nodes tie.
const (
	// Random puts each pod on a node and card drawn uniformly among those
	// that fit, afresh for each pod (a hash of the node, the card and the
	// pod's Request.Salt, so that it stays a pure function).
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
		Name:   Random,
		PerPod: true,
		// Every card that fits is equally likely: a card's cost is the least
		// draw over the cards alike to it (same model, size and use), and
		// Place tries one card of each such group, so a group wins with a
		// chance that goes with its size.
		CardCost: func(rt *Rating, i int, _ int64) float64 {
			n, r := rt.Node, rt.Req
			c := &n.Cards[i]
			d := 1.0
			for j := range n.Cards {
				if o := &n.Cards[j]; o.Total == c.Total && o.Used == c.Used && o.Model == c.Model && o.Healthy == c.Healthy {
					d = min(d, draw(n.Name, j, r.Salt))
				}
			}
			return d
		},
		// Every node that fits is equally likely, drawn afresh for each pod
		// (the paper's scheduler draws one node among those that fit).
		NodeScore: func(rt *Rating, after *Node) float64 {
			return draw(after.Name, -1, rt.Req.Salt)
		},
	})
	register(&Policy{
		Name:     BestFit,
		CardCost: bestFitCard,
		// floor(100 * (1 - (cpuLeft/128 cores + gpuLeft/8 cards) / 2)).
		NodeScore: func(_ *Rating, after *Node) float64 {
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
func bestFitCard(rt *Rating, i int, share int64) float64 {
	return float64(rt.Node.Cards[i].Free() - share)
}

// packingScore is the paper's GPU packing score, from the cards the pod
// takes (those whose use grew):
//   - on a node whose cards are all free: max(33 - free cards, free cards);
//   - when it takes free cards on a node in use: max(50 - free cards taken, 33);
//   - when it shares cards in use: max(100 - sum(free% of those cards)/10, 50);
//   - a pod without GPU: 0.
func packingScore(rt *Rating, after *Node) float64 {
	before := rt.Node
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

// draw is a number in [0, 1) drawn from the node's name, a card position
// (-1: none) and the pod's salt: the same arguments always draw the same
// number, and any change draws an unrelated one.
func draw(node string, pos int, salt uint64) float64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(int64(pos)))
	binary.LittleEndian.PutUint64(b[8:], salt)
	h.Write(b[:])
	return float64(mix(h.Sum64())>>11) / (1 << 53)
}

// mix is splitmix64's finaliser: FNV's high bits change little when only
// the last bytes hashed differ, and the draw reads the high bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
