package extender

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/internal/fixture"
)

const (
	filterPath     = Prefix + "/filter"
	prioritizePath = Prefix + "/prioritize"
	bindPath       = Prefix + "/bind"
)

// cluster: n1 has one 16 GiB T4 of which 10 GiB are held; n2 two free 16 GiB
// T4s; n3 one T4 that is unhealthy; n4 runs gpushare's device plugin (2 cards
// in 32 GiB, no inventory).
func cluster() []runtime.Object {
	return []runtime.Object{
		fixture.MakeNode("n1").Cards("Tesla T4", fixture.GiB(16)).Obj(),
		fixture.MakeNode("n2").Cards("Tesla T4", fixture.GiB(16), fixture.GiB(16)).Obj(),
		fixture.MakeNode("n3").Cards("Tesla T4", fixture.GiB(16)).Unhealthy(0).Obj(),
		fixture.MakeNode("n4").Legacy(32, 2).Obj(),
		fixture.MakePod().Name("old").Node("n1").GPUMem(10).
			Annotation(contract.AnnotationAllocation, `{"0":{"0":10}}`).Obj(),
	}
}

func names(n ...string) *[]string { return &n }

func TestFilter(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	tests := []struct {
		name             string
		pod              *corev1.Pod
		nodes            *[]string
		wantNodes        []string
		wantFailed       extenderv1.FailedNodesMap
		wantUnresolvable extenderv1.FailedNodesMap
	}{{
		name: "a share fits where a card has room", pod: fixture.MakePod().Name("a").GPUMem(8).Obj(),
		nodes:     names("n1", "n2", "n3", "n4", "ghost"),
		wantNodes: []string{"n2", "n4"},
		wantFailed: extenderv1.FailedNodesMap{
			"n1":    `gpupack: largest free card has 6 GiB, container "c0" needs 8 GiB`,
			"n3":    "gpupack: no healthy card of an allowed model (pod allows any; node has 1 x Tesla T4 (unhealthy))",
			"ghost": "gpupack: node is not in the extender's cache (deleted, or not yet seen)",
		},
		wantUnresolvable: extenderv1.FailedNodesMap{},
	}, {
		name: "a share larger than every card is unresolvable", pod: fixture.MakePod().Name("b").GPUMem(17).Obj(),
		nodes: names("n1", "n2"), wantNodes: []string{},
		wantFailed: extenderv1.FailedNodesMap{},
		wantUnresolvable: extenderv1.FailedNodesMap{
			"n1": `gpupack: largest free card has 6 GiB, container "c0" needs 17 GiB`,
			"n2": `gpupack: largest free card has 16 GiB, container "c0" needs 17 GiB`,
		},
	}, {
		name: "a model constraint", pod: fixture.MakePod().Name("c").GPUMem(1).Models("A100").Obj(),
		nodes: names("n2"), wantNodes: []string{},
		wantFailed: extenderv1.FailedNodesMap{},
		wantUnresolvable: extenderv1.FailedNodesMap{
			"n2": "gpupack: no healthy card of an allowed model (pod allows A100; node has 2 x Tesla T4)",
		},
	}, {
		name: "a fractional request is rejected on every node", pod: fixture.MakePod().Name("d").Container("1.5", "", "").Obj(),
		nodes: names("n1", "n2"), wantNodes: []string{},
		wantFailed: extenderv1.FailedNodesMap{},
		wantUnresolvable: extenderv1.FailedNodesMap{
			"n1": `gpupack: container "c0" asks for 1500m aliyun.com/gpu-mem: must be a whole number`,
			"n2": `gpupack: container "c0" asks for 1500m aliyun.com/gpu-mem: must be a whole number`,
		},
	}, {
		name: "a pod without GPU passes everywhere", pod: fixture.MakePod().Name("e").Container("", "", "1").Obj(),
		nodes: names("n1", "ghost"), wantNodes: []string{"n1", "ghost"},
		wantFailed: extenderv1.FailedNodesMap{}, wantUnresolvable: extenderv1.FailedNodesMap{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res extenderv1.ExtenderFilterResult
			if code := e.post(filterPath, extenderv1.ExtenderArgs{Pod: tt.pod, NodeNames: tt.nodes}, &res); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			if res.Error != "" {
				t.Fatalf("error %q", res.Error)
			}
			if diff := cmp.Diff(tt.wantNodes, *res.NodeNames); diff != "" {
				t.Errorf("nodes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantFailed, res.FailedNodes); diff != "" {
				t.Errorf("failed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantUnresolvable, res.FailedAndUnresolvableNodes); diff != "" {
				t.Errorf("unresolvable (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("full node list mode", func(t *testing.T) {
		list := &corev1.NodeList{Items: []corev1.Node{*fixture.MakeNode("n1").Obj(), *fixture.MakeNode("n2").Obj()}}
		var res extenderv1.ExtenderFilterResult
		e.post(filterPath, extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("f").GPUMem(8).Obj(), Nodes: list}, &res)
		if res.NodeNames != nil || res.Nodes == nil || len(res.Nodes.Items) != 1 || res.Nodes.Items[0].Name != "n2" {
			t.Errorf("got %+v", res)
		}
	})
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	for _, tt := range []struct {
		name, path string
		body       []byte
		want       string
	}{
		{"malformed JSON", filterPath, []byte(`{"pod":`), "body is not a valid request"},
		{"trailing data", filterPath, []byte(`{} {}`), "trailing data"},
		{"no pod", filterPath, []byte(`{"nodenames":["n1"]}`), "no pod"},
		{"no nodes", prioritizePath, []byte(`{"pod":{"metadata":{"name":"x","uid":"u"}}}`), "neither nodenames nor nodes"},
		{"pod without uid", filterPath, []byte(`{"pod":{"metadata":{"name":"x"}},"nodenames":[]}`), "has no uid"},
		{"bind without a pod name", bindPath, []byte(`{"node":"n1"}`), "podName, podNamespace and node are required"},
		{"negative quantity as a string", filterPath, []byte(`{"pod":{"metadata":{"name":"x","uid":"u"},"spec":{"containers":[{"name":"c","resources":{"limits":{"aliyun.com/gpu-mem":"x"}}}]}},"nodenames":["n1"]}`), "body is not a valid request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(e.http.URL+tt.path, "application/json", strings.NewReader(string(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&out)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(out["error"], tt.want) {
				t.Errorf("got %d %q, want 400 containing %q", resp.StatusCode, out["error"], tt.want)
			}
		})
	}
	t.Run("wrong method", func(t *testing.T) {
		if code, _ := e.get(filterPath); code != http.StatusMethodNotAllowed {
			t.Errorf("GET filter: %d", code)
		}
	})
}

func TestPrioritize(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	var res extenderv1.HostPriorityList
	pod := fixture.MakePod().Name("a").GPUMem(4).Obj()
	if code := e.post(prioritizePath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: names("n1", "n2", "n3", "n4")}, &res); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	// Free after 4 GiB: n1 6-4=2, n2 32-4=28, n4 32-4=28; n3 does not fit (0).
	// Raw -2, -28, -28: n1 gets 10, the others 0.
	want := extenderv1.HostPriorityList{{Host: "n1", Score: 10}, {Host: "n2", Score: 0}, {Host: "n3", Score: 0}, {Host: "n4", Score: 0}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestRandomDrawsPerPod: under the random policy, pods of one shape on
// identical nodes go to nodes drawn afresh for each pod, not to the one node
// a draw from the nodes' state alone would always prefer.
func TestRandomDrawsPerPod(t *testing.T) {
	var objs []runtime.Object
	var nodes []string
	for i := range 8 {
		n := "n" + string(rune('a'+i))
		objs = append(objs, fixture.MakeNode(n).Cards("Tesla T4", fixture.GiB(16), fixture.GiB(16)).Obj())
		nodes = append(nodes, n)
	}
	e := newEnv(t, "random", objs...)
	won := map[string]int{}
	for i := range 80 {
		pod := fixture.MakePod().Name("p" + string(rune('0'+i/10)) + string(rune('0'+i%10))).GPUMem(4).Obj()
		var res extenderv1.HostPriorityList
		if code := e.post(prioritizePath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes}, &res); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		for _, h := range res {
			if h.Score == extenderv1.MaxExtenderPriority {
				won[h.Host]++
			}
		}
	}
	// 80 pods over 8 nodes: each node is top for about 10 (a node missing
	// altogether has odds of 8 * (7/8)^80, about 2e-4).
	if len(won) != len(nodes) {
		t.Errorf("top nodes over 80 pods: %v, want all %d nodes", won, len(nodes))
	}
}

// TestFilterKeepsBest: under filterKeeps: best, filter answers exactly the
// nodes prioritize would score highest under filterKeeps: fitting (a
// uniform sample of at most config.MaxBestNodes when more tie), still says
// why the others fail, and prioritize and bind go on from that answer.
func TestFilterKeepsBest(t *testing.T) {
	best := &config.Config{Policy: "binpack", FilterKeeps: config.FilterKeepsBest}
	t.Run("the best node, and why the others fail", func(t *testing.T) {
		e := newEnvWith(t, best, cluster()...)
		pod := e.create(fixture.MakePod().Name("a").GPUMem(4).Obj())
		var res extenderv1.ExtenderFilterResult
		if code := e.post(filterPath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: names("n1", "n2", "n3", "n4", "ghost")}, &res); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		// Free after 4 GiB: n1 2, n2 and n4 28 (binpack: n1 alone is best).
		if diff := cmp.Diff([]string{"n1"}, *res.NodeNames); diff != "" {
			t.Errorf("nodes (-want +got):\n%s", diff)
		}
		if got := slices.Sorted(maps.Keys(res.FailedNodes)); !slices.Equal(got, []string{"ghost", "n3"}) {
			t.Errorf("failed nodes %v, want ghost and n3", got)
		}
		var prio extenderv1.HostPriorityList
		e.post(prioritizePath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: res.NodeNames}, &prio)
		if diff := cmp.Diff(extenderv1.HostPriorityList{{Host: "n1", Score: 10}}, prio); diff != "" {
			t.Errorf("prioritize (-want +got):\n%s", diff)
		}
		if code := e.post(bindPath, extenderv1.ExtenderBindingArgs{PodName: "a", PodNamespace: pod.Namespace, PodUID: pod.UID, Node: "n1"}, nil); code != http.StatusOK {
			t.Fatalf("bind: status %d", code)
		}
		if got := e.pod(pod.Namespace, "a").Spec.NodeName; got != "n1" {
			t.Errorf("bound to %q", got)
		}
	})
	t.Run("full node list mode", func(t *testing.T) {
		e := newEnvWith(t, best, cluster()...)
		list := &corev1.NodeList{Items: []corev1.Node{*fixture.MakeNode("n1").Obj(), *fixture.MakeNode("n2").Obj(), *fixture.MakeNode("n4").Obj()}}
		var res extenderv1.ExtenderFilterResult
		e.post(filterPath, extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("f").GPUMem(4).Obj(), Nodes: list}, &res)
		if res.NodeNames != nil || res.Nodes == nil || len(res.Nodes.Items) != 1 || res.Nodes.Items[0].Name != "n1" {
			t.Errorf("got %+v", res)
		}
	})
	t.Run("a uniform sample of many ties", func(t *testing.T) {
		var objs []runtime.Object
		var all []string
		for i := range 40 {
			n := fmt.Sprintf("n%02d", i)
			objs = append(objs, fixture.MakeNode(n).Cards("Tesla T4", fixture.GiB(16)).Obj())
			all = append(all, n)
		}
		e := newEnvWith(t, best, objs...)
		seen := map[string]bool{}
		for i := range 20 {
			var res extenderv1.ExtenderFilterResult
			e.post(filterPath, extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name(fmt.Sprint("p", i)).GPUMem(4).Obj(), NodeNames: &all}, &res)
			got := *res.NodeNames
			if len(got) != config.MaxBestNodes || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
				t.Fatalf("answer %v: want %d distinct nodes in the request's order", got, config.MaxBestNodes)
			}
			for _, n := range got {
				seen[n] = true
			}
		}
		// 20 samples of 16 of 40: a node left out of all has odds of
		// 40 * (24/40)^20, about 1.5e-3.
		if len(seen) != len(all) {
			t.Errorf("%d of %d tied nodes ever answered", len(seen), len(all))
		}
	})
	for _, pol := range []string{"binpack", "fill"} {
		t.Run("the nodes prioritize scores highest under "+pol, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, 0))
			for round := range 5 {
				var objs []runtime.Object
				var all []string
				for i := range 12 {
					n := fmt.Sprintf("n%02d", i)
					objs = append(objs, fixture.MakeNode(n).Cards("Tesla T4", fixture.GiB(16), fixture.GiB(16)).Obj())
					all = append(all, n)
					for c := range 2 {
						if held := rng.IntN(17); held > 0 {
							objs = append(objs, fixture.MakePod().Name(fmt.Sprintf("held-%s-%d", n, c)).Node(n).GPUMem(int64(held)).
								Annotation(contract.AnnotationAllocation, fmt.Sprintf(`{"0":{"%d":%d}}`, c, held)).Obj())
						}
					}
				}
				pod := fixture.MakePod().Name(fmt.Sprint("p", round)).GPUMem(int64(1 + rng.IntN(8))).Obj()
				var prio extenderv1.HostPriorityList
				newEnvWith(t, &config.Config{Policy: pol}, objs...).post(prioritizePath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &all}, &prio)
				var top []string
				for _, h := range prio {
					if h.Score == extenderv1.MaxExtenderPriority {
						top = append(top, h.Host)
					}
				}
				var res extenderv1.ExtenderFilterResult
				newEnvWith(t, &config.Config{Policy: pol, FilterKeeps: config.FilterKeepsBest}, objs...).post(filterPath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &all}, &res)
				if len(top) == 0 || len(top) > config.MaxBestNodes {
					t.Fatalf("round %d: %d top nodes: the case tests nothing", round, len(top))
				}
				if diff := cmp.Diff(top, *res.NodeNames); diff != "" {
					t.Errorf("round %d: filter's answer against prioritize's top (-prioritize +filter):\n%s", round, diff)
				}
			}
		})
	}
}
