package extender

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/extender/policy"
)

// errBadRequest marks a request the extender cannot read; the HTTP layer
// answers 400.
var errBadRequest = errors.New("bad request")

// nodeNames returns the candidate nodes of args, in either mode.
func nodeNames(args *extenderv1.ExtenderArgs) ([]string, error) {
	if args.NodeNames != nil {
		return *args.NodeNames, nil
	}
	if args.Nodes != nil {
		names := make([]string, len(args.Nodes.Items))
		for i := range args.Nodes.Items {
			names[i] = args.Nodes.Items[i].Name
		}
		return names, nil
	}
	return nil, fmt.Errorf("%w: neither nodenames nor nodes is set", errBadRequest)
}

func checkArgs(args *extenderv1.ExtenderArgs) ([]string, error) {
	if args.Pod == nil {
		return nil, fmt.Errorf("%w: no pod", errBadRequest)
	}
	if args.Pod.UID == "" {
		return nil, fmt.Errorf("%w: pod %s has no uid", errBadRequest, klog.KObj(args.Pod))
	}
	return nodeNames(args)
}

// Filter keeps the nodes where every GPU container of the pod fits on
// healthy cards of an allowed model (under filterKeeps: best, the best of
// them only), and says for each node where it does not fit why not.
func (s *Server) Filter(ctx context.Context, args *extenderv1.ExtenderArgs) (*extenderv1.ExtenderFilterResult, error) {
	a, err := s.filter(ctx, args)
	if err != nil {
		return nil, err
	}
	return a.result(), nil
}

// filterAnswer is Filter's answer before its maps of failed nodes are
// made: the HTTP handler writes them from the list of failed nodes
// (writeFilterAnswer), as encoding/json writes the maps, without making
// them. On a busy cluster they hold most of thousands of nodes.
type filterAnswer struct {
	// res is the answer without its maps.
	res   *extenderv1.ExtenderFilterResult
	names []string
	// failed are the positions in names of the nodes that fail, in
	// increasing order, and why says why the one at a position does.
	failed []int
	why    func(i int) (m *miss, unresolvable bool)
}

// result is the answer with its maps: a node named twice is in a map
// once, with why of its last position (as the maps were filled).
func (a *filterAnswer) result() *extenderv1.ExtenderFilterResult {
	res := *a.res
	res.FailedNodes, res.FailedAndUnresolvableNodes = extenderv1.FailedNodesMap{}, extenderv1.FailedNodesMap{}
	for _, i := range a.failed {
		if m, unresolvable := a.why(i); unresolvable {
			res.FailedAndUnresolvableNodes[a.names[i]] = m.text
		} else {
			res.FailedNodes[a.names[i]] = m.text
		}
	}
	return &res
}

// filter is Filter, answering with its maps not yet made.
func (s *Server) filter(ctx context.Context, args *extenderv1.ExtenderArgs) (*filterAnswer, error) {
	names, err := checkArgs(args)
	if err != nil {
		return nil, err
	}
	log := klog.FromContext(ctx).WithValues("pod", klog.KObj(args.Pod))
	a := &filterAnswer{res: &extenderv1.ExtenderFilterResult{}, names: names}
	req, err := cache.RequestOf(args.Pod)
	switch {
	case errors.Is(err, contract.ErrNoGPU):
		// Not ours to judge: every node passes.
		passAll(args, a.res)
		return a, nil
	case err != nil:
		// A request no node can ever serve: say so on every node.
		log.V(2).Info("Rejecting a GPU request", "err", err)
		msg := newMiss(nil, "gpupack: "+err.Error())
		a.failed = make([]int, len(names))
		for i := range a.failed {
			a.failed[i] = i
		}
		a.why = func(int) (*miss, bool) { return msg, true }
		s.metrics.rejections.WithLabelValues("bad_request").Add(float64(len(names)))
		keep(args, a.res, nil)
		return a, nil
	}
	ev := s.evaluate(ctx, req, names)
	fit := make([]int, 0, len(names)) // positions of the nodes where the pod fits
	unknown, rejected := 0, map[policy.UnfitKind]int{}
	for i, r := range ev.results {
		switch {
		case !r.known():
			a.failed = append(a.failed, i)
			unknown++
		case r.miss != nil:
			a.failed = append(a.failed, i)
			rejected[r.miss.unfit.Kind]++
		default:
			fit = append(fit, i)
		}
	}
	results := ev.results
	a.why = func(i int) (*miss, bool) {
		m := results[i].miss
		return m, m.unfit != nil && m.unfit.Unresolvable
	}
	if unknown > 0 {
		s.metrics.rejections.WithLabelValues("unknown_node").Add(float64(unknown))
	}
	for kind, count := range rejected {
		s.metrics.rejections.WithLabelValues(reasonLabel(kind)).Add(float64(count))
	}
	if s.cfg.FilterKeeps == config.FilterKeepsBest && len(fit) > 0 {
		// The other fitting nodes are left out of the answer, not failed:
		// the pod is scheduled on one of these.
		best := bestOf(ev, fit, config.MaxBestNodes)
		log.V(4).Info("Filtered", "nodes", len(names), "fit", len(fit), "best", len(best))
		ev = ev.subset(best)
		s.memo.put(args.Pod.UID, ev)
		keep(args, a.res, best)
		return a, nil
	}
	s.memo.put(args.Pod.UID, ev)
	log.V(4).Info("Filtered", "nodes", len(names), "fit", len(fit))
	if len(fit) > 0 && len(fit) == len(names) {
		// Every node fits: the answer is the request's list as it came
		// (no copy of thousands of names; an empty list is answered as
		// keep answers it, never null).
		passAll(args, a.res)
		return a, nil
	}
	keep(args, a.res, fit)
	return a, nil
}

// bestOf returns, in increasing order, the positions among fit (positions
// in ev, increasing) whose score ties the highest: a uniform sample of
// at most n of them when there are more.
func bestOf(ev *evaluation, fit []int, n int) []int {
	var best []int
	top := math.Inf(-1)
	for _, i := range fit {
		switch sc := ev.results[i].decision.Score; {
		case sc > top:
			top, best = sc, append(best[:0], i)
		case sc == top:
			best = append(best, i)
		}
	}
	if len(best) > n {
		rand.Shuffle(len(best), func(a, b int) { best[a], best[b] = best[b], best[a] })
		best = best[:n]
		slices.Sort(best)
	}
	return best
}

func passAll(args *extenderv1.ExtenderArgs, res *extenderv1.ExtenderFilterResult) {
	res.NodeNames, res.Nodes = args.NodeNames, args.Nodes
}

// keep answers in the mode of the request with the nodes at positions at
// (increasing), in the request's order.
func keep(args *extenderv1.ExtenderArgs, res *extenderv1.ExtenderFilterResult, at []int) {
	if args.NodeNames != nil {
		names := make([]string, len(at))
		for j, i := range at {
			names[j] = (*args.NodeNames)[i]
		}
		res.NodeNames = &names
		return
	}
	list := &corev1.NodeList{Items: make([]corev1.Node, len(at))}
	for j, i := range at {
		list.Items[j] = args.Nodes.Items[i]
	}
	res.Nodes = list
}

// Prioritize scores every candidate 0..10 under the policy; the best
// placement gets 10 alone (ties aside), nodes where the pod does not fit 0.
func (s *Server) Prioritize(ctx context.Context, args *extenderv1.ExtenderArgs) (extenderv1.HostPriorityList, error) {
	names, err := checkArgs(args)
	if err != nil {
		return nil, err
	}
	out := make(extenderv1.HostPriorityList, len(names))
	for i, n := range names {
		out[i] = extenderv1.HostPriority{Host: n}
	}
	req, err := cache.RequestOf(args.Pod)
	if err != nil {
		return out, nil // not a GPU pod, or one filter already rejected
	}
	ev := s.memo.get(args.Pod.UID)
	if ev == nil || !s.fresh(ev) || !ev.sameNodes(names) {
		ev = s.evaluate(ctx, req, names)
		s.memo.put(args.Pod.UID, ev)
	}
	raw := make([]float64, 0, len(names))
	for _, r := range ev.results {
		if r.fits() {
			raw = append(raw, r.decision.Score)
		}
	}
	scores := policy.Normalize(raw)
	for i, r := range ev.results {
		if r.fits() {
			out[i].Score, scores = scores[0], scores[1:]
		}
	}
	if log := klog.FromContext(ctx).V(4); log.Enabled() {
		top := append(extenderv1.HostPriorityList(nil), out...)
		sort.SliceStable(top, func(a, b int) bool { return top[a].Score > top[b].Score })
		log.Info("Prioritized", "pod", klog.KObj(args.Pod), "top", top[:min(3, len(top))])
	}
	return out, nil
}

// fresh reports whether no card changed since the evaluation.
func (s *Server) fresh(ev *evaluation) bool {
	fresh := false
	s.cache.Read(func(gen uint64, _ func(string) *policy.Node) { fresh = gen == ev.gen })
	return fresh
}
