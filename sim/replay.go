package sim

import (
	"fmt"
	"math/rand"
	"slices"
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
	if cfg.Policy == nil {
		return nil, fmt.Errorf("no policy")
	}
	switch cfg.Ties {
	case "":
		cfg.Ties = DefaultTies
	case TieFirst, TieRandom, TiePermutation:
	default:
		return nil, fmt.Errorf("unknown tie-break %q: want %s, %s or %s", cfg.Ties, TieFirst, TieRandom, TiePermutation)
	}
	start := time.Now()
	capacity := Capacity(cfg.Nodes)
	if capacity == 0 {
		return nil, fmt.Errorf("the nodes have no GPU")
	}
	nodes := make([]*policy.Node, len(cfg.Nodes))
	for i, n := range cfg.Nodes {
		pn := &policy.Node{Name: n.Name, Resources: true, CPUFree: n.CPUMilli, MemFree: n.MemoryMiB, Cards: make([]policy.Card, n.GPUs)}
		for c := range pn.Cards {
			pn.Cards[c] = policy.Card{Index: c, Model: n.Model, Total: CardUnits, Healthy: true}
		}
		nodes[i] = pn
	}
	// Each pod of the file's request, and its shape: the number of its
	// request's policy.RequestKey, which pods of one request share.
	reqs := make([]*policy.Request, len(cfg.Pods))
	shapes := make([]int, len(cfg.Pods))
	shapeOf := map[string]int{}
	for i := range cfg.Pods {
		reqs[i] = cfg.Pods[i].Request()
		k := policy.RequestKey(reqs[i], cfg.Policy)
		if _, ok := shapeOf[k]; !ok {
			shapeOf[k] = len(shapeOf)
		}
		shapes[i] = shapeOf[k]
	}
	cards := map[string]int64{}
	for _, n := range cfg.Nodes {
		cards[n.Model] += int64(n.GPUs)
	}
	var learner *policy.Learner
	var fixed *policy.Workload
	if cfg.Policy.NeedsWorkload {
		switch cfg.Workload {
		case Trace:
			all := policy.NewLearner(cfg.Policy, cfg.WorkloadCoverage)
			all.SetCapacity(cards)
			for _, r := range reqs {
				all.Observe(r)
			}
			fixed = all.Workload()
		case Seen, "":
			learner = policy.NewLearner(cfg.Policy, cfg.WorkloadCoverage)
			learner.SetCapacity(cards)
		default:
			return nil, fmt.Errorf("unknown workload source %q: want %s or %s", cfg.Workload, Seen, Trace)
		}
	}
	// answers[s] are the answers for shape s, by node index.
	answers := make([]*policy.Answers[answer], len(shapeOf))
	seq := cfg.Sequence
	if seq == nil {
		seq = Order(cfg.Pods, cfg.Seed, capacity)
	}
	// The tie-break has its own generator.
	ties := rand.New(rand.NewSource(cfg.Seed))
	// rank[i] is node i's place in the order ties are given in.
	rank := make([]int, len(nodes))
	for i := range rank {
		rank[i] = i
	}
	if cfg.Ties == TiePermutation {
		rank = ties.Perm(len(nodes))
	}
	res := &Result{Seed: cfg.Seed, Capacity: capacity, Placements: make([]Placement, len(seq))}
	var version uint64
	var arrived, allocated int64
	for s, pi := range seq {
		pod, req := &cfg.Pods[pi], reqs[pi]
		if cfg.Policy.PerPod {
			// Each arrival is a pod of its own, with its own draws.
			r := *req
			r.Salt = uint64(cfg.Seed)<<32 | uint64(s)
			req = &r
		}
		if learner != nil {
			learner.Observe(req)
		}
		t0 := time.Now()
		w := fixed
		if learner != nil {
			w = learner.Workload()
		}
		kept := answers[shapes[pi]]
		if kept == nil || cfg.Cold || cfg.Policy.PerPod {
			kept = policy.NewAnswers[answer](w, len(nodes))
		}
		kept = kept.For(w)
		answers[shapes[pi]] = kept
		best, count := -1, 0
		var bestScore float64
		for i, n := range nodes {
			a := kept.Get(i, n)
			if a == nil {
				d, unfit := policy.Place(n, req, cfg.Policy, kept.Workload())
				a = kept.Keep(i, n, answer{fits: unfit == nil, d: d})
			}
			if !a.fits {
				continue
			}
			switch {
			case best < 0 || a.d.Score > bestScore:
				best, bestScore, count = i, a.d.Score, 1
			case a.d.Score == bestScore:
				count++
				if cfg.Ties == TieRandom && ties.Intn(count) == 0 || cfg.Ties == TiePermutation && rank[i] < rank[best] {
					best = i
				}
			}
		}
		decision := time.Since(t0)
		p := Placement{Seq: s, Pod: pi, Node: best, Decision: decision}
		arrived += pod.Demand()
		if best >= 0 {
			n := nodes[best]
			alloc := kept.Get(best, n).d.Allocation()
			n.Apply(alloc)
			n.CPUFree -= pod.CPUMilli
			n.MemFree -= pod.MemoryMiB
			version++
			n.Version = version
			for _, perCard := range alloc {
				for c := range perCard {
					p.Cards = append(p.Cards, c)
				}
			}
			slices.Sort(p.Cards)
			allocated += pod.Demand()
		}
		p.Arrived, p.Allocated = arrived, allocated
		res.Placements[s] = p
	}
	res.Wall = time.Since(start)
	return res, nil
}
