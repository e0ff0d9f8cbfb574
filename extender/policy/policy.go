package policy

import (
	"fmt"
	"math"
	"sort"
	"strings"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// Name names a registered policy.
type Name string

// The policies gpupack ships.
const (
	// Binpack is gpushare's card choice (the card with the least free memory
	// that still fits, "best fit") extended across nodes: the node left with
	// the least free GPU memory wins.
	Binpack Name = "binpack"
	// Spread puts each share on the emptiest card of the emptiest node.
	Spread Name = "spread"
	// FGD is Fragmentation Gradient Descent (Weng et al., USENIX ATC 2023):
	// the node and cards whose fragmentation, measured against the workload,
	// grows least.
	FGD Name = "fgd"
)

// Default is the policy the extender uses when none is configured: the one
// that leaves the fewest GPUs unallocated when the openb trace is replayed
// through this code by cmd/gpupack-sim (sim/README.md has the figures).
const Default = Fill

// Policy is a pair of pure functions of a node, a request and a workload.
type Policy struct {
	Name Name
	// CardCost rates putting share units on rt.Node.Cards[i] (for a whole
	// card, share is the card's size); the search tries cheaper cards first.
	// It reads the node, the workload, the card and the share, and of the
	// request only what a PerPod policy may: the extender keeps its values
	// for a node while the node is unchanged (Measures).
	CardCost func(rt *Rating, i int, share int64) float64
	// NodeScore rates a node after a placement; higher is better. rt.Node
	// is the node as it was, after the node with the placement applied.
	NodeScore func(rt *Rating, after *Node) float64
	// NeedsWorkload tells whether the policy reads the workload estimate.
	NeedsWorkload bool
	// PerPod tells whether the policy reads Request.Salt: its answer for
	// one pod may not be reused for another pod of the same shape.
	PerPod bool
	// Coverage is the share of pods (0..1] whose shapes the policy wants its
	// workload estimate to keep; 0: DefaultCoverage.
	Coverage float64
}

// DefaultCoverage is the FGD paper's: the most frequent shapes covering 95%
// of pods.
const DefaultCoverage = 0.95

// WorkloadCoverage is the coverage a workload estimate for p keeps: the
// configured one when set (above 0), else the policy's own, else
// DefaultCoverage (also for no policy, p nil). Everywhere a coverage is
// optional (the extender's workloadCoverage, cache.Options, sim.Config,
// gpupack-sim --coverage), 0 means the policy's own, resolved here.
func (p *Policy) WorkloadCoverage(configured float64) float64 {
	switch {
	case configured > 0:
		return configured
	case p != nil && p.Coverage > 0:
		return p.Coverage
	}
	return DefaultCoverage
}

var registry = map[Name]*Policy{}

func register(p *Policy) {
	if _, dup := registry[p.Name]; dup {
		panic("policy registered twice: " + string(p.Name))
	}
	registry[p.Name] = p
}

// Get returns the named policy, or an error that lists the known ones.
func Get(name Name) (*Policy, error) {
	if name == "" || name == "default" {
		name = Default
	}
	p, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown policy %q: known policies are %s", name, strings.Join(Names(), ", "))
	}
	return p, nil
}

// Names lists the registered policies, sorted.
func Names() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, string(n))
	}
	sort.Strings(out)
	return out
}

// Normalize maps raw scores to the extender range 0..10. The best raw score
// gets 10 and only it (ties aside): every other node gets at most 9, scaled
// linearly between the worst (0) and the best. So the node the policy
// prefers is the one kube-scheduler's extender score ranks first.
func Normalize(raw []float64) []int64 {
	out := make([]int64, len(raw))
	if len(raw) == 0 {
		return out
	}
	lo, hi := raw[0], raw[0]
	for _, v := range raw {
		lo = math.Min(lo, v)
		hi = math.Max(hi, v)
	}
	const top = extenderv1.MaxExtenderPriority
	for i, v := range raw {
		switch {
		case v == hi:
			out[i] = top
		case hi == lo:
			out[i] = top
		default:
			s := int64(math.Floor(float64(top-1) * (v - lo) / (hi - lo)))
			out[i] = max(extenderv1.MinExtenderPriority, min(s, top-1))
		}
	}
	return out
}
