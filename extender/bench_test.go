package extender

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/sim"
)

// traceDir is the openb trace shipped beside the repository (../shared).
var traceDir = filepath.Join("..", "..", "shared", "traces", "openb")

// benchServer is a server over a cache filled directly, without informers.
func benchServer(b testing.TB, pol string, unit contract.Unit, mod ...func(*config.Config)) *Server {
	b.Helper()
	klog.SetLogger(klog.Background().V(10)) // quiet
	p, err := policy.Get(policy.Name(pol))
	if err != nil {
		b.Fatal(err)
	}
	c := cache.New(cache.Options{Unit: unit, SigningKey: testKey, Policy: p, Logger: klog.Background().V(10)})
	client := fake.NewClientset()
	cfg := &config.Config{Policy: pol, MemoryUnit: string(unit)}
	for _, m := range mod {
		m(cfg)
	}
	config.SetDefaults(cfg)
	srv, err := NewServer(cfg, Deps{Client: client, Pods: informers.NewSharedInformerFactory(client, 0).Core().V1().Pods().Lister(), Cache: c, Key: testKey})
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

// traceNodes are the openb GPU nodes with cards of 1000 units each, so that
// memory units are thousandths of a card, as the trace counts them.
func traceNodes(b *testing.B) []*corev1.Node {
	nodes, err := sim.ReadNodes(filepath.Join(traceDir, "openb_node_list_gpu_node.csv"))
	if err != nil {
		b.Skipf("trace not available: %v", err)
	}
	return kubeNodes(nodes)
}

// kubeNodes are trace nodes as the extender reads them.
func kubeNodes(nodes []sim.Node) []*corev1.Node {
	var out []*corev1.Node
	for _, tn := range nodes {
		n := fixture.MakeNode(tn.Name)
		n.Status.Allocatable[corev1.ResourceCPU] = *resource.NewMilliQuantity(tn.CPUMilli, resource.DecimalSI)
		n.Status.Allocatable[corev1.ResourceMemory] = *resource.NewQuantity(tn.MemoryMiB<<20, resource.BinarySI)
		sizes := make([]int64, tn.GPUs)
		for i := range sizes {
			sizes[i] = sim.CardUnits
		}
		out = append(out, n.Cards(tn.Model, sizes...).Obj())
	}
	return out
}

// tracePods are the workload's pods in the published order (sim.Order:
// sorted by name, shuffled with the seed, inflated to 130% of the
// cluster's GPUs), as pods the extender reads.
func tracePods(b *testing.B, workload string, seed int64, capacity int64) []*corev1.Pod {
	nodes, err := sim.ReadNodes(filepath.Join(traceDir, "openb_node_list_gpu_node.csv"))
	if err != nil {
		b.Skipf("trace not available: %v", err)
	}
	pods, err := sim.ReadPods(filepath.Join(traceDir, "openb_pod_list_"+workload+".csv"), sim.Models(nodes))
	if err != nil {
		b.Fatal(err)
	}
	return kubePods(pods, sim.Order(pods, seed, capacity))
}

// kubePods are the trace pods seq names, in that order, as pods the
// extender reads.
func kubePods(pods []sim.Pod, seq []int) []*corev1.Pod {
	out := make([]*corev1.Pod, len(seq))
	for i, pi := range seq {
		p := pods[pi]
		w := fixture.MakePod().Name(fmt.Sprintf("%s-%d", p.Name, i))
		cpu := strconv.FormatInt(p.CPUMilli, 10) + "m"
		switch {
		case p.NumGPU == 0:
			w.Container("", "", cpu)
		case p.GPUMilli < sim.CardUnits && p.NumGPU == 1:
			w.Container(strconv.FormatInt(p.GPUMilli, 10), "", cpu)
		case p.GPUMilli < sim.CardUnits:
			w.Container(strconv.FormatInt(p.GPUMilli*p.NumGPU, 10), strconv.FormatInt(p.NumGPU, 10), cpu)
		default:
			w.Container("", strconv.FormatInt(p.NumGPU, 10), cpu)
		}
		if len(p.Models) > 0 {
			w.Models(strings.Join(p.Models, "|"))
		}
		pod := w.Obj()
		mem := *resource.NewQuantity(p.MemoryMiB<<20, resource.BinarySI)
		pod.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory] = mem
		pod.Spec.Containers[0].Resources.Requests[corev1.ResourceMemory] = mem
		out[i] = pod
	}
	return out
}

// replay schedules pods one at a time through the extender's own filter,
// prioritize and assume, until arrived GPU demand reaches stopAt percent of
// capacity; it returns the unallocated GPU percent then, and where each pod
// went ("node cards", "" when it fit nowhere). With learn, each pod is shown
// to the cache as it arrives, as the informer shows a new pod before
// kube-scheduler asks about it.
func replay(tb testing.TB, srv *Server, names []string, pods []*corev1.Pod, capacity int64, stopAt int64, learn bool) (float64, []string) {
	ctx := context.Background()
	var arrived, placed int64
	var where []string
	for _, pod := range pods {
		req, _ := cache.RequestOf(pod)
		var demand int64
		for _, c := range req.Containers {
			if c.Whole() {
				demand += 1000 * c.Count
			} else {
				demand += c.Mem
			}
		}
		if (arrived+demand)*100 > capacity*stopAt {
			break
		}
		arrived += demand
		if learn {
			srv.cache.SetPod(pod)
		}
		where = append(where, "")
		if len(req.Containers) == 0 {
			// CPU-only pods pass the extender's filter everywhere; in the
			// published protocol the policy places them too.
			ev := srv.evaluate(ctx, req, names)
			best, score := "", 0.0
			for i, n := range names {
				if r := ev.results[i]; r.fits() && (best == "" || r.decision.Score > score) {
					best, score = n, r.decision.Score
				}
			}
			if best != "" {
				if err := srv.cache.Assume(pod, req, best, contract.Allocation{}); err != nil {
					tb.Fatal(err)
				}
				where[len(where)-1] = best
			}
			continue
		}
		args := &extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}
		fr, err := srv.Filter(ctx, args)
		if err != nil {
			tb.Fatal(err)
		}
		if len(*fr.NodeNames) == 0 {
			continue
		}
		args.NodeNames = fr.NodeNames
		pr, err := srv.Prioritize(ctx, args)
		if err != nil {
			tb.Fatal(err)
		}
		best := pr[0]
		for _, h := range pr {
			if h.Score > best.Score {
				best = h
			}
		}
		d, err := srv.assume(ctx, pod, req, best.Host)
		if err != nil {
			tb.Fatal(err)
		}
		where[len(where)-1] = at(best.Host, d.Cards())
		placed += demand
	}
	return 100 - float64(placed)*100/float64(capacity), where
}

// BenchmarkFilterPrioritizeTrace measures one filter and one prioritize for
// a shared pod over the 1,213 nodes of the openb trace, filled by replaying
// the default workload (seed 42, or GPUPACK_TRACE_SEED) to 100% arrived
// through the same code; -v logs the unallocated GPU % it left.
func BenchmarkFilterPrioritizeTrace(b *testing.B) {
	for _, pol := range []string{"fill", "binpack", "spread", "fgd"} {
		b.Run(pol, func(b *testing.B) {
			srv, names := traceCluster(b, pol, 1)
			pod := fixture.MakePod().Name("bench").Container("500", "", "4000m").Obj()
			benchVerbs(b, srv, pod, names)
		})
	}
}

// traceCluster is a server under pol over the openb trace's nodes, copies
// times over (the copies' names end in -1, -2, ...), filled by replaying
// the default workload (seed 42, or GPUPACK_TRACE_SEED; its pods drawn for
// the copies' GPUs) to 100% arrived through the same code, and the nodes'
// names. It logs the unallocated GPU % it left (-v).
func traceCluster(b *testing.B, pol string, copies int) (*Server, []string) {
	srv := benchServer(b, pol, contract.MiB)
	var names []string
	var capacity int64
	nodes := traceNodes(b)
	for c := range copies {
		for _, n := range nodes {
			if c > 0 {
				n = n.DeepCopy()
				n.Name = fmt.Sprintf("%s-%d", n.Name, c)
			}
			srv.cache.SetNode(n)
			names = append(names, n.Name)
		}
	}
	for _, n := range srv.cache.Inspect("") {
		capacity += n.Total
	}
	seed := int64(42)
	if v := os.Getenv("GPUPACK_TRACE_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			b.Fatalf("GPUPACK_TRACE_SEED: %v", err)
		}
	}
	pods := tracePods(b, "default", seed, capacity)
	for _, p := range pods {
		srv.cache.SetPod(p) // the workload estimate sees every pod
	}
	unalloc, _ := replay(b, srv, names, pods, capacity, 100, false)
	b.Logf("%s, %d nodes: unallocated GPU at 100%% arrived (default workload, seed %d): %.2f%%", pol, len(names), seed, unalloc)
	return srv, names
}

// BenchmarkFilterPrioritize5000 measures one filter and one prioritize over
// 5,000 nodes of 8 x 80 GiB cards in node-name mode, each node half used.
func BenchmarkFilterPrioritize5000(b *testing.B) {
	for _, pol := range []string{"binpack", "fgd", "fill"} {
		b.Run(pol, func(b *testing.B) {
			srv, names := cluster5000(b, pol)
			benchVerbs(b, srv, fixture.MakePod().Name("bench").GPUMem(20).Obj(), names)
		})
	}
}

// cluster5000 is a server over 5,000 nodes of 8 x 80 GiB cards (unit GiB),
// about half of the cards holding a share of 1 to 80 GiB, and the nodes'
// names.
func cluster5000(b testing.TB, pol string, mod ...func(*config.Config)) (*Server, []string) {
	b.Helper()
	srv := benchServer(b, pol, contract.GiB, mod...)
	rng := rand.New(rand.NewSource(1))
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("node-%04d", i)
		sizes := []int64{80 << 10, 80 << 10, 80 << 10, 80 << 10, 80 << 10, 80 << 10, 80 << 10, 80 << 10}
		srv.cache.SetNode(fixture.MakeNode(names[i]).Cards("NVIDIA A100-SXM4-80GB", sizes...).Obj())
		for j := range 8 {
			if rng.Intn(2) == 0 {
				continue
			}
			units := int64(1 + rng.Intn(80))
			pod := fixture.MakePod().Name(fmt.Sprintf("fill-%d-%d", i, j)).GPUMem(units).Obj()
			req, _ := cache.RequestOf(pod)
			if err := srv.cache.Assume(pod, req, names[i], contract.Allocation{0: {j: units}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return srv, names
}

// benchVerbs measures filter plus prioritize for one pod per iteration, in
// each regime (see regimes).
func benchVerbs(b *testing.B, srv *Server, base *corev1.Pod, names []string) {
	for _, rg := range regimes {
		b.Run(string(rg), func(b *testing.B) {
			ctx := context.Background()
			rng := rand.New(rand.NewSource(2))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				pod := base.DeepCopy()
				pod.Name, pod.UID = fmt.Sprintf("%s-%s-%d", base.Name, rg, i), types.UID(fmt.Sprintf("%s-%s-%d", base.UID, rg, i))
				if rg == warm {
					b.StopTimer()
					touch(b, srv, names[rng.Intn(len(names))], i)
					b.StartTimer()
				} else {
					setCPU(pod, int64(1+i%1000))
					if rg == newShare {
						setNewShare(pod, i)
					}
				}
				args := &extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}
				fr, err := srv.Filter(ctx, args)
				if err != nil || len(*fr.NodeNames) == 0 {
					b.Fatalf("filter: %v %v", err, fr.FailedNodes)
				}
				args.NodeNames = fr.NodeNames
				if _, err := srv.Prioritize(ctx, args); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// regime is how the pods of a benchmark differ from one pod to the next.
type regime string

const (
	// cold: every pod has a new shape (its CPU request differs), so every
	// node is evaluated; its GPU share is the others', so the card costs
	// each node keeps for a share (policy.Measures) serve it, as they do
	// a pod of a new shape that asks one of the few shares most pods ask.
	cold regime = "cold"
	// newShare: every pod's CPU request and GPU share both differ from
	// the last pods', so no card cost kept serves it.
	newShare regime = "newshare"
	// warm: every pod has the same shape and, between pods, one node
	// changes (as after a bind), so the unchanged nodes' results are
	// reused.
	warm regime = "warm"
)

var regimes = []regime{cold, newShare, warm}

// setCPU sets the CPU that pod's first container asks (limit and request).
func setCPU(pod *corev1.Pod, milli int64) {
	cpu := *resource.NewMilliQuantity(milli, resource.DecimalSI)
	c := &pod.Spec.Containers[0]
	c.Resources.Limits[corev1.ResourceCPU] = cpu
	c.Resources.Requests[corev1.ResourceCPU] = cpu
}

// setNewShare makes the i-th pod of the newshare regime ask a share other
// than the last pods' (limit and request): for a base share of u units,
// u - i mod ⌈u/2⌉, a cycle of ⌈u/2⌉ shares (more than the shares a node
// keeps the card costs of), none larger than the base, so that the nodes
// that fit the base fit them.
func setNewShare(pod *corev1.Pod, i int) {
	c := &pod.Spec.Containers[0]
	base := c.Resources.Limits[contract.ResourceGPUMem]
	u := base.Value()
	share := *resource.NewQuantity(u-int64(i)%((u+1)/2), resource.DecimalSI)
	c.Resources.Limits[contract.ResourceGPUMem] = share
	c.Resources.Requests[contract.ResourceGPUMem] = share
}

var touches int

// touch changes one node as a bind would: a CPU-only pod lands on it.
func touch(b testing.TB, srv *Server, node string, _ int) {
	touches++
	pod := fixture.MakePod().Name(fmt.Sprintf("touch-%d", touches)).Container("", "", "1m").Obj()
	req, _ := cache.RequestOf(pod)
	if err := srv.cache.Assume(pod, req, node, contract.Allocation{}); err != nil {
		b.Fatal(err)
	}
}
