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
	names, err := checkArgs(args)
	if err != nil {
		return nil, err
	}
	log := klog.FromContext(ctx).WithValues("pod", klog.KObj(args.Pod))
	res := &extenderv1.ExtenderFilterResult{FailedNodes: extenderv1.FailedNodesMap{}, FailedAndUnresolvableNodes: extenderv1.FailedNodesMap{}}
	req, err := cache.RequestOf(args.Pod)
	switch {
	case errors.Is(err, contract.ErrNoGPU):
		// Not ours to judge: every node passes.
		return passAll(args, res), nil
	case err != nil:
		// A request no node can ever serve: say so on every node.
		log.V(2).Info("Rejecting a GPU request", "err", err)
		msg := "gpupack: " + err.Error()
		res.FailedAndUnresolvableNodes = make(extenderv1.FailedNodesMap, len(names))
		for _, n := range names {
			res.FailedAndUnresolvableNodes[n] = msg
		}
		s.metrics.rejections.WithLabelValues("bad_request").Add(float64(len(names)))
		return keep(args, res, nil), nil
	}
	ev := s.evaluate(ctx, req, names)
	// The maps are made at their size: on a busy cluster they hold most of
	// thousands of nodes.
	var failed, unresolvable int
	for _, r := range ev.results {
		switch {
		case r.miss == nil:
		case r.known() && r.miss.unfit.Unresolvable:
			unresolvable++
		default:
			failed++
		}
	}
	res.FailedNodes, res.FailedAndUnresolvableNodes = make(extenderv1.FailedNodesMap, failed), make(extenderv1.FailedNodesMap, unresolvable)
	fit := make([]int, 0, len(names)) // positions of the nodes where the pod fits
	rejected := map[string]int{}
	for i, n := range names {
		r := ev.results[i]
		switch {
		case !r.known():
			res.FailedNodes[n] = r.miss.reason
			rejected["unknown_node"]++
		case r.miss != nil:
			if r.miss.unfit.Unresolvable {
				res.FailedAndUnresolvableNodes[n] = r.miss.reason
			} else {
				res.FailedNodes[n] = r.miss.reason
			}
			rejected[reasonLabel(r.miss.unfit)]++
		default:
			fit = append(fit, i)
		}
	}
	for reason, count := range rejected {
		s.metrics.rejections.WithLabelValues(reason).Add(float64(count))
	}
	if s.cfg.FilterKeeps == config.FilterKeepsBest && len(fit) > 0 {
		// The other fitting nodes are left out of the answer, not failed:
		// the pod is scheduled on one of these.
		best := bestOf(ev, fit, config.MaxBestNodes)
		log.V(4).Info("Filtered", "nodes", len(names), "fit", len(fit), "best", len(best))
		ev = ev.subset(best)
		s.memo.put(args.Pod.UID, ev)
		return keep(args, res, best), nil
	}
	s.memo.put(args.Pod.UID, ev)
	log.V(4).Info("Filtered", "nodes", len(names), "fit", len(fit))
	if len(fit) > 0 && len(fit) == len(names) {
		// Every node fits: the answer is the request's list as it came
		// (no copy of thousands of names; an empty list is answered as
		// keep answers it, never null).
		return passAll(args, res), nil
	}
	return keep(args, res, fit), nil
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

func passAll(args *extenderv1.ExtenderArgs, res *extenderv1.ExtenderFilterResult) *extenderv1.ExtenderFilterResult {
	res.NodeNames, res.Nodes = args.NodeNames, args.Nodes
	return res
}

// keep answers in the mode of the request with the nodes at positions at
// (increasing), in the request's order.
func keep(args *extenderv1.ExtenderArgs, res *extenderv1.ExtenderFilterResult, at []int) *extenderv1.ExtenderFilterResult {
	if args.NodeNames != nil {
		names := make([]string, len(at))
		for j, i := range at {
			names[j] = (*args.NodeNames)[i]
		}
		res.NodeNames = &names
		return res
	}
	list := &corev1.NodeList{Items: make([]corev1.Node, len(at))}
	for j, i := range at {
		list.Items[j] = args.Nodes.Items[i]
	}
	res.Nodes = list
	return res
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
