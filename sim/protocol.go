package sim

import (
	"math/rand"
	"sort"
)

// Inflation is how far the published protocol inflates a workload: copies
// are appended until the GPU asked for would pass 130% of the cluster's.
const Inflation = 130

// Capacity is the cluster's GPU in thousandths of a card.
func Capacity(nodes []Node) int64 {
	var c int64
	for _, n := range nodes {
		c += int64(n.GPUs) * CardUnits
	}
	return c
}

// Order returns the arrival sequence of the published protocol, as indices
// into pods: the pods sorted by name, shuffled with Go's math/rand seeded
// by seed, then copies drawn uniformly with replacement from the original
// pods (the same generator, continued) appended until the next copy would
// push the total GPU asked for past Inflation% of capacity.
func Order(pods []Pod, seed int64, capacity int64) []int {
	seq := make([]int, len(pods))
	for i := range seq {
		seq[i] = i
	}
	sort.SliceStable(seq, func(a, b int) bool { return pods[seq[a]].Name < pods[seq[b]].Name })
	rng := rand.New(rand.NewSource(seed))
	rng.Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i] })
	var total int64
	for _, i := range seq {
		total += pods[i].Demand()
	}
	orig := len(seq)
	if orig == 0 {
		return seq
	}
	limit := capacity * Inflation / 100
	for {
		// Copies are drawn from the shuffled originals, as the published
		// runs draw from the list they shuffled.
		i := seq[rng.Intn(orig)]
		if total+pods[i].Demand() > limit {
			break
		}
		total += pods[i].Demand()
		seq = append(seq, i)
	}
	return seq
}
