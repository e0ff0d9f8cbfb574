package sim

import (
	"time"

	"github.com/gpupack/gpupack/extender/policy"
)

// WorkloadSource says what FGD-like policies measure fragmentation against.
type WorkloadSource string

const (
	// Seen: the pods that arrived so far, the current one included (what an
	// extender learns from its informers; the default).
	Seen WorkloadSource = "seen"
	// Trace: every pod of the workload file, known in advance (what the
	// published FGD runs used).
	Trace WorkloadSource = "trace"
)

// TieBreak says which of the nodes with the best score gets the pod.
type TieBreak string

const (
	// TieFirst: the first in the node list's order.
	TieFirst TieBreak = "first"
	// TieRandom: one drawn uniformly at random (a generator seeded by the
	// seed), as kube-scheduler chooses between its best nodes.
	TieRandom TieBreak = "random"
	// TiePermutation: the first in a random order of the nodes drawn once
	// per seed (DefaultTies). The published simulator does this: it
	// prefixes every node's name with its place in a random permutation,
	// and its scheduler gives ties to the smallest name. This is what
	// reproduces the published figures.
	TiePermutation TieBreak = "perm"
	// DefaultTies is the tie-break used when none is given.
	DefaultTies = TiePermutation
)

// Config is one replay: a cluster, a workload, a policy, a seed.
type Config struct {
	Nodes  []Node
	Pods   []Pod
	Policy *policy.Policy
	Seed   int64
	// Workload is what a policy that reads a workload estimate measures
	// against (Seen if empty).
	Workload WorkloadSource
	// WorkloadCoverage is the share of pods whose shapes the workload
	// estimate keeps; 0: the policy's own (policy.Policy.WorkloadCoverage).
	WorkloadCoverage float64
	// Ties breaks ties between the best nodes (DefaultTies if empty).
	Ties TieBreak
	// Sequence, when set, is the arrival order (indices into Pods, repeats
	// allowed) instead of the protocol's Order: an offline packing chooses
	// its own.
	Sequence []int
	// Cold rates every node for every pod; otherwise a node whose state did
	// not change since a pod of the same request was rated (under the same
	// workload estimate) keeps its answer, by the extender's own rule
	// (policy.Answers). A policy that draws per pod (PerPod) is always
	// cold: its answer for one pod is not another's.
	Cold bool
}

// Placement is what happened to one arriving pod.
type Placement struct {
	Seq  int // arrival order over the inflated sequence
	Pod  int // index into Config.Pods
	Node int // index into Config.Nodes; -1 when the pod failed
	// Cards are the card indices it got, one per card asked.
	Cards []int
	// Decision is the time taken to choose: every node rated (a kept
	// answer where the node did not change), the best picked.
	Decision time.Duration
	// Arrived and Allocated are cumulative GPU (thousandths of a card)
	// after this pod: asked for, and placed.
	Arrived, Allocated int64
}

// Result is one replay's outcome.
type Result struct {
	Seed int64
	// Capacity is the nodes' GPU, in thousandths of a card.
	Capacity int64
	// Placements are by arrival (Placement.Seq).
	Placements []Placement
	// Wall is the whole replay's time.
	Wall time.Duration
}

// answer is what the replay keeps of Place's answer for a node.
type answer struct {
	fits bool
	d    policy.Decision
}

// Replay schedules the pods one at a time in the published order (Order):
// every node is rated with policy.Place (the extender's filter, card choice
// and score), the best raw score wins, and cfg.Ties breaks ties. A node's
// version changes when a pod lands on it, and its answers are kept per
// request shape in policy.Answers under the node's index. No pod departs;
// a pod that fits nowhere fails and is skipped.
func Replay(cfg Config) (*Result, error) {
	start := time.Now()
	sc, err := newScheduler(&cfg)
	if err != nil {
		return nil, err
	}
	capacity := Capacity(cfg.Nodes)
	seq := cfg.Sequence
	if seq == nil {
		seq = Order(cfg.Pods, cfg.Seed, capacity)
	}
	res := &Result{Seed: cfg.Seed, Capacity: capacity, Placements: make([]Placement, len(seq))}
	var arrived, allocated int64
	for s, pi := range seq {
		sc.arrive(pi, s)
		t0 := time.Now()
		best, alloc := sc.choose(pi, s)
		p := Placement{Seq: s, Pod: pi, Node: best, Decision: time.Since(t0)}
		arrived += cfg.Pods[pi].Demand()
		if best >= 0 {
			p.Cards = sc.bind(pi, best, alloc)
			allocated += cfg.Pods[pi].Demand()
		}
		p.Arrived, p.Allocated = arrived, allocated
		res.Placements[s] = p
	}
	res.Wall = time.Since(start)
	return res, nil
}
