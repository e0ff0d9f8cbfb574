package extender

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/sim"
)

// at says where a pod went: its node, and its cards when it has any.
func at(node string, cards []int) string {
	if len(cards) == 0 {
		return node
	}
	return fmt.Sprint(node, " ", cards)
}

// TestHandlersPlaceAsTheSimulator replays one workload through the
// extender's filter, prioritize and assume, and through cmd/gpupack-sim's
// replay, and checks that every pod lands on the same node and cards: the
// figures the simulator reports are the extender's.
func TestHandlersPlaceAsTheSimulator(t *testing.T) {
	// A small cluster of the trace's models, and pods of every kind the
	// trace has: CPU-only, shares of one card, whole cards, several whole
	// cards, some limited to models.
	var nodes []sim.Node
	for i, spec := range []struct {
		model string
		gpus  int
		cpu   int64
		n     int
	}{{"G2", 8, 96000, 5}, {"T4", 4, 64000, 3}, {"V100M32", 8, 96000, 3}, {"A10", 1, 32000, 2}} {
		for j := range spec.n {
			nodes = append(nodes, sim.Node{Name: fmt.Sprintf("n%d-%d", i, j), CPUMilli: spec.cpu, MemoryMiB: 786432, GPUs: spec.gpus, Model: spec.model})
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	models := [][]string{{"T4"}, {"V100M32"}, {"G2", "V100M32"}, {"A10", "T4"}}
	var pods []sim.Pod
	for i := range 60 { // fewer than fill the cluster: the replay inflates them to 130%
		p := sim.Pod{Name: fmt.Sprintf("pod-%03d", i), CPUMilli: 1000 * (1 + rng.Int64N(16)), MemoryMiB: 1024 * (1 + rng.Int64N(64))}
		switch k := rng.IntN(20); {
		case k < 4: // CPU only
		case k < 12:
			p.NumGPU, p.GPUMilli = 1, 50*(1+rng.Int64N(19))
		case k < 17:
			p.NumGPU, p.GPUMilli = 1, sim.CardUnits
		default:
			p.NumGPU, p.GPUMilli = []int64{2, 4, 8}[rng.IntN(3)], sim.CardUnits
		}
		if p.NumGPU > 0 && rng.IntN(5) == 0 {
			p.Models = models[rng.IntN(len(models))]
		}
		pods = append(pods, p)
	}
	const seed = 7
	for _, name := range []string{"fill", "fgd", "binpack"} {
		t.Run(name, func(t *testing.T) {
			pol, err := policy.Get(policy.Name(name))
			if err != nil {
				t.Fatal(err)
			}
			res, err := sim.Replay(sim.Config{Nodes: nodes, Pods: pods, Policy: pol, Seed: seed, Workload: sim.Seen, Ties: sim.TieFirst})
			if err != nil {
				t.Fatal(err)
			}
			srv := benchServer(t, name, contract.MiB)
			var names []string
			for _, n := range kubeNodes(nodes) {
				srv.cache.SetNode(n)
				names = append(names, n.Name)
			}
			var capacity int64
			for _, n := range srv.cache.Inspect("") {
				capacity += n.Total
			}
			if capacity != res.Capacity {
				t.Fatalf("capacity %d in the extender, %d in the simulator", capacity, res.Capacity)
			}
			_, got := replay(t, srv, names, kubePods(pods, sim.Order(pods, seed, capacity)), capacity, 130, true)
			if len(got) != len(res.Placements) {
				t.Fatalf("the extender saw %d pods, the simulator %d", len(got), len(res.Placements))
			}
			differ, placed := 0, 0
			for s, p := range res.Placements {
				want := ""
				if p.Node >= 0 {
					want = at(nodes[p.Node].Name, p.Cards)
					placed++
				}
				if got[s] != want {
					if differ++; differ <= 5 {
						t.Errorf("pod %d (%s): extender %q, simulator %q", s, pods[p.Pod].Name, got[s], want)
					}
				}
			}
			if differ > 0 {
				t.Errorf("%d of %d pods placed differently", differ, len(got))
			}
			if placed < len(got)/2 {
				t.Errorf("only %d of %d pods placed: the cluster is too small to tell policies apart", placed, len(got))
			}
		})
	}
}
