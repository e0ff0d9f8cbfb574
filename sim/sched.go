package sim

import (
	"fmt"
	"math/rand"
	"slices"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
)

// scheduler is the extender's decision for one pod at a time, over the
// simulated cluster: every node rated with policy.Place, the best raw score
// wins, ties broken by the config's rule. Replay and Churn drive it; it
// keeps the nodes' state, the policy's workload estimate and each shape's
// answers for unchanged nodes.
type scheduler struct {
	cfg   *Config
	nodes []*policy.Node
	// reqs[i] is pod i's request and shapes[i] the number of its
	// policy.RequestKey, which pods of one request share.
	reqs   []*policy.Request
	shapes []int
	// answers[s] are the answers for shape s, by node index.
	answers []*policy.Answers[answer]
	learner *policy.Learner
	fixed   *policy.Workload
	// ties is the tie-break's own generator; rank[i] is node i's place in
	// the order ties are given in.
	ties    *rand.Rand
	rank    []int
	version uint64
}

// newScheduler checks cfg and builds the empty cluster.
func newScheduler(cfg *Config) (*scheduler, error) {
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
	if Capacity(cfg.Nodes) == 0 {
		return nil, fmt.Errorf("the nodes have no GPU")
	}
	sc := &scheduler{cfg: cfg, nodes: make([]*policy.Node, len(cfg.Nodes))}
	for i, n := range cfg.Nodes {
		pn := &policy.Node{Name: n.Name, Resources: true, CPUFree: n.CPUMilli, MemFree: n.MemoryMiB, CPUMilli: n.CPUMilli, MemMiB: n.MemoryMiB, Cards: make([]policy.Card, n.GPUs)}
		for c := range pn.Cards {
			pn.Cards[c] = policy.Card{Index: c, Model: n.Model, Total: CardUnits, Healthy: true}
		}
		sc.nodes[i] = pn
	}
	sc.reqs = make([]*policy.Request, len(cfg.Pods))
	sc.shapes = make([]int, len(cfg.Pods))
	shapeOf := map[string]int{}
	for i := range cfg.Pods {
		sc.reqs[i] = cfg.Pods[i].Request()
		k := policy.RequestKey(sc.reqs[i], cfg.Policy)
		if _, ok := shapeOf[k]; !ok {
			shapeOf[k] = len(shapeOf)
		}
		sc.shapes[i] = shapeOf[k]
	}
	sc.answers = make([]*policy.Answers[answer], len(shapeOf))
	capacity := policy.Capacity{}
	for _, n := range cfg.Nodes {
		if n.GPUs > 0 {
			capacity.Add(n.Model, n.GPUs, n.CPUMilli, n.MemoryMiB)
		}
	}
	if cfg.Policy.NeedsWorkload {
		switch cfg.Workload {
		case Trace:
			all := policy.NewLearner(cfg.Policy, cfg.WorkloadCoverage)
			all.SetCapacity(capacity)
			for _, r := range sc.reqs {
				all.Observe(r)
			}
			sc.fixed = all.Workload()
		case Seen, "":
			sc.learner = policy.NewLearner(cfg.Policy, cfg.WorkloadCoverage)
			sc.learner.SetCapacity(capacity)
		default:
			return nil, fmt.Errorf("unknown workload source %q: want %s or %s", cfg.Workload, Seen, Trace)
		}
	}
	sc.ties = rand.New(rand.NewSource(cfg.Seed))
	sc.rank = make([]int, len(sc.nodes))
	for i := range sc.rank {
		sc.rank[i] = i
	}
	if cfg.Ties == TiePermutation {
		sc.rank = sc.ties.Perm(len(sc.nodes))
	}
	return sc, nil
}

// request is arrival s of pod pi as the policy sees it: a policy that draws
// per pod (PerPod) gets draws of its own for each arrival.
func (sc *scheduler) request(pi, s int) *policy.Request {
	req := sc.reqs[pi]
	if sc.cfg.Policy.PerPod {
		r := *req
		r.Salt = uint64(sc.cfg.Seed)<<32 | uint64(s)
		req = &r
	}
	return req
}

// arrive tells the workload estimate of arrival s of pod pi, as the
// extender's informers see a new pod.
func (sc *scheduler) arrive(pi, s int) {
	if sc.learner != nil {
		sc.learner.Observe(sc.request(pi, s))
	}
}

// kept returns the answers of pod pi's shape under the current workload
// estimate (fresh ones where the config or the policy keeps none).
func (sc *scheduler) kept(pi int) *policy.Answers[answer] {
	w := sc.fixed
	if sc.learner != nil {
		w = sc.learner.Workload()
	}
	kept := sc.answers[sc.shapes[pi]]
	if kept == nil || sc.cfg.Cold || sc.cfg.Policy.PerPod {
		kept = policy.NewAnswers[answer](w, len(sc.nodes))
	}
	kept = kept.For(w)
	sc.answers[sc.shapes[pi]] = kept
	return kept
}

// rate is the answer of node i for arrival s of pod pi.
func (sc *scheduler) rate(kept *policy.Answers[answer], i, pi, s int) *answer {
	n := sc.nodes[i]
	a := kept.Get(i, n)
	if a == nil {
		d, unfit := policy.Place(n, sc.request(pi, s), sc.cfg.Policy, kept.Workload())
		a = kept.Keep(i, n, answer{fits: unfit == nil, d: d})
	}
	return a
}

// choose rates every node for arrival s of pod pi and returns the best
// node and what the pod would get there; -1 and nil when it fits nowhere.
func (sc *scheduler) choose(pi, s int) (int, contract.Allocation) {
	kept := sc.kept(pi)
	best, count := -1, 0
	var bestScore float64
	for i := range sc.nodes {
		a := sc.rate(kept, i, pi, s)
		if !a.fits {
			continue
		}
		switch {
		case best < 0 || a.d.Score > bestScore:
			best, bestScore, count = i, a.d.Score, 1
		case a.d.Score == bestScore:
			count++
			if sc.cfg.Ties == TieRandom && sc.ties.Intn(count) == 0 || sc.cfg.Ties == TiePermutation && sc.rank[i] < sc.rank[best] {
				best = i
			}
		}
	}
	if best < 0 {
		return -1, nil
	}
	return best, kept.Get(best, sc.nodes[best]).d.Allocation()
}

// fitsOn is what arrival s of pod pi would get on node i alone; nil when it
// does not fit there.
func (sc *scheduler) fitsOn(pi, s, i int) contract.Allocation {
	if a := sc.rate(sc.kept(pi), i, pi, s); a.fits {
		return a.d.Allocation()
	}
	return nil
}

// bind puts pod pi on node i with alloc and returns the cards it got,
// sorted.
func (sc *scheduler) bind(pi, i int, alloc contract.Allocation) []int {
	n, pod := sc.nodes[i], &sc.cfg.Pods[pi]
	n.Apply(alloc)
	n.CPUFree -= pod.CPUMilli
	n.MemFree -= pod.MemoryMiB
	sc.version++
	n.Version = sc.version
	var cards []int
	for _, perCard := range alloc {
		for c := range perCard {
			cards = append(cards, c)
		}
	}
	slices.Sort(cards)
	return cards
}

// release frees what bind gave pod pi on node i.
func (sc *scheduler) release(pi, i int, alloc contract.Allocation) {
	n, pod := sc.nodes[i], &sc.cfg.Pods[pi]
	for idx, u := range alloc.PerCard() {
		if c := n.Card(idx); c != nil {
			c.Used -= u
		}
	}
	n.CPUFree += pod.CPUMilli
	n.MemFree += pod.MemoryMiB
	sc.version++
	n.Version = sc.version
}
