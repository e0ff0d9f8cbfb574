package cache

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/internal/fixture"
)

var key = []byte("cache-test-key-0123456789")

func newCache() *Cache { return New(Options{Unit: contract.GiB, SigningKey: key, Coverage: 0.95}) }

// signed returns a bound pod whose decision the extender signed.
func signed(w *fixture.PodWrapper, node, alloc string) *corev1.Pod {
	p := w.Node(node).Obj()
	p.Annotations[contract.AnnotationAllocation] = alloc
	p.Annotations[contract.AnnotationNode] = node
	p.Annotations[contract.AnnotationSignature] = contract.Sign(key, string(p.UID), node, alloc)
	return p
}

// rewritten returns a bound pod whose signed plan the device plugin kept
// beside the record it rewrote to what the kubelet gave.
func rewritten(w *fixture.PodWrapper, node, plan, record string) *corev1.Pod {
	p := signed(w, node, plan)
	p.Annotations[contract.AnnotationPlanned] = plan
	p.Annotations[contract.AnnotationAllocation] = record
	return p
}

func onNode(p *corev1.Pod, node string) *corev1.Pod {
	p.Spec.NodeName = node
	return p
}

func used(c *Cache, node string) []int64 {
	var out []int64
	for _, n := range c.Inspect(node) {
		for _, card := range n.Cards {
			out = append(out, card.Allocated)
		}
	}
	return out
}

func trustOf(c *Cache, node, pod string) Trust {
	for _, n := range c.Inspect(node) {
		for _, card := range n.Cards {
			for _, p := range card.Pods {
				if p.Name == pod {
					return p.Trust
				}
			}
		}
		for _, p := range n.Unplaced {
			if p.Name == pod {
				return p.Trust
			}
		}
	}
	return ""
}

func TestRebuildTrust(t *testing.T) {
	node := fixture.MakeNode("n").Cards("T4", fixture.GiB(16), fixture.GiB(16)).Obj()
	tests := []struct {
		name      string
		pods      []*corev1.Pod
		wantUsed  []int64
		wantTrust map[string]Trust
	}{{
		name:      "a signed decision is trusted",
		pods:      []*corev1.Pod{signed(fixture.MakePod().Name("a").GPUMem(4), "n", `{"0":{"1":4}}`)},
		wantUsed:  []int64{0, 4},
		wantTrust: map[string]Trust{"a": Signed},
	}, {
		name: "annotations on a pending pod are never counted",
		pods: []*corev1.Pod{fixture.MakePod().Name("a").GPUMem(4).
			Annotation(contract.AnnotationAllocation, `{"0":{"1":4}}`).Annotation(contract.AnnotationIndex, "1").Obj()},
		wantUsed:  []int64{0, 0},
		wantTrust: map[string]Trust{},
	}, {
		// The forged pod is older and arrives first; the signed one still wins card 1:
		// 12 (signed) on card 1, the forged 8 cannot fit there (4 left) and goes to card 0.
		name: "a forged claim yields to a signed decision",
		pods: []*corev1.Pod{
			fixture.MakePod().Name("forged").Created(1).Node("n").GPUMem(8).Annotation(contract.AnnotationAllocation, `{"0":{"1":8}}`).Obj(),
			signed(fixture.MakePod().Name("real").Created(2).GPUMem(12), "n", `{"0":{"1":12}}`),
		},
		wantUsed:  []int64{8, 12},
		wantTrust: map[string]Trust{"forged": Fitted, "real": Signed},
	}, {
		name:      "a signature for another node is not trusted; the claim fits and is used",
		pods:      []*corev1.Pod{onNode(signed(fixture.MakePod().Name("moved").GPUMem(4), "elsewhere", `{"0":{"1":4}}`), "n")},
		wantUsed:  []int64{0, 4},
		wantTrust: map[string]Trust{"moved": Claimed},
	}, {
		name:      "gpushare's single index annotation is used where it fits",
		pods:      []*corev1.Pod{fixture.MakePod().Name("legacy").Node("n").GPUMem(6).Annotation(contract.AnnotationIndex, "1").Obj()},
		wantUsed:  []int64{0, 6},
		wantTrust: map[string]Trust{"legacy": Claimed},
	}, {
		name:      "a claim that does not match the request is refitted",
		pods:      []*corev1.Pod{fixture.MakePod().Name("liar").Node("n").GPUMem(6).Annotation(contract.AnnotationAllocation, `{"0":{"1":1}}`).Obj()},
		wantUsed:  []int64{6, 0},
		wantTrust: map[string]Trust{"liar": Fitted},
	}, {
		// 16+16 signed: the bound pod without annotations fits nowhere.
		name: "a pod that fits no card is unplaced, not dropped",
		pods: []*corev1.Pod{
			signed(fixture.MakePod().Name("w").Container("", "2", ""), "n", `{"0":{"0":16,"1":16}}`),
			fixture.MakePod().Name("extra").Node("n").GPUMem(1).Obj(),
		},
		wantUsed:  []int64{16, 16},
		wantTrust: map[string]Trust{"w": Signed, "extra": Unplaced},
	}, {
		// a and b (6 GiB each) were planned on cards 0 and 1 and swapped by
		// the kubelet; the plugin has rewritten a's record but not yet b's.
		// The plans say 6 + 6; the records, half rewritten, would say 0 + 12.
		name: "a swap half rewritten counts the signed plans",
		pods: []*corev1.Pod{
			rewritten(fixture.MakePod().Name("a").GPUMem(6), "n", `{"0":{"0":6}}`, `{"0":{"1":6}}`),
			signed(fixture.MakePod().Name("b").GPUMem(6), "n", `{"0":{"1":6}}`),
		},
		wantUsed:  []int64{6, 6},
		wantTrust: map[string]Trust{"a": Signed, "b": Signed},
	}, {
		// The plan was edited: the signature no longer covers it, so the
		// record is a claim, used where it fits.
		name: "an edited plan is not trusted",
		pods: []*corev1.Pod{func() *corev1.Pod {
			p := rewritten(fixture.MakePod().Name("a").GPUMem(6), "n", `{"0":{"0":6}}`, `{"0":{"1":6}}`)
			p.Annotations[contract.AnnotationPlanned] = `{"0":{"0":5}}`
			return p
		}()},
		wantUsed:  []int64{0, 6},
		wantTrust: map[string]Trust{"a": Claimed},
	}, {
		name: "finished pods free their share",
		pods: []*corev1.Pod{
			signed(fixture.MakePod().Name("done").GPUMem(4).Phase(corev1.PodSucceeded), "n", `{"0":{"0":4}}`),
			signed(fixture.MakePod().Name("failed").GPUMem(4).Phase(corev1.PodFailed), "n", `{"0":{"1":4}}`),
		},
		wantUsed:  []int64{0, 0},
		wantTrust: map[string]Trust{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache()
			// Pods before their node, as an informer may deliver them.
			for _, p := range tt.pods {
				c.SetPod(p)
			}
			c.SetNode(node)
			if diff := cmp.Diff(tt.wantUsed, used(c, "n")); diff != "" {
				t.Errorf("used (-want +got):\n%s", diff)
			}
			for pod, want := range tt.wantTrust {
				if got := trustOf(c, "n", pod); got != want {
					t.Errorf("pod %s: trust %q, want %q", pod, got, want)
				}
			}
		})
	}
}

func TestAssume(t *testing.T) {
	c := newCache()
	c.SetNode(fixture.MakeNode("n").Cards("T4", fixture.GiB(16)).Obj())
	p := fixture.MakePod().Name("a").GPUMem(10).Obj()
	req, _ := RequestOf(p)
	if err := c.Assume(p, req, "n", contract.Allocation{0: {0: 10}}); err != nil {
		t.Fatal(err)
	}
	q := fixture.MakePod().Name("b").GPUMem(10).Obj()
	qreq, _ := RequestOf(q)
	if err := c.Assume(q, qreq, "n", contract.Allocation{0: {0: 10}}); !errors.Is(err, ErrDoesNotFit) {
		t.Errorf("second 10 on a 16 card: %v, want ErrDoesNotFit", err)
	}
	if err := c.Assume(p, req, "n", contract.Allocation{0: {0: 10}}); !errors.Is(err, ErrAlreadyPlaced) {
		t.Errorf("assume twice: %v, want ErrAlreadyPlaced", err)
	}
	if err := c.Assume(q, qreq, "gone", contract.Allocation{0: {0: 10}}); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("unknown node: %v", err)
	}
	if err := c.Assume(q, qreq, "n", contract.Allocation{0: {0: 4}}); !errors.Is(err, ErrDoesNotFit) {
		t.Errorf("allocation that does not match the request: %v", err)
	}
	c.Forget(p.UID)
	if got := used(c, "n"); got[0] != 0 {
		t.Errorf("after Forget: %v", got)
	}
	// Once bound, Forget keeps the decision.
	_ = c.Assume(p, req, "n", contract.Allocation{0: {0: 10}})
	c.Bound(p.UID)
	c.Forget(p.UID)
	if got := used(c, "n"); got[0] != 10 {
		t.Errorf("after Bound and Forget: %v", got)
	}
	// The informer then shows the bound pod (without our annotations yet):
	// the assumed decision stands.
	c.SetPod(fixture.MakePod().Name("a").GPUMem(10).Node("n").Obj())
	if got := trustOf(c, "n", "a"); got != Assumed {
		t.Errorf("trust %q", got)
	}
	c.DeletePod(p.UID)
	if got := used(c, "n"); got[0] != 0 {
		t.Errorf("after delete: %v", got)
	}
}

func TestNodes(t *testing.T) {
	c := newCache()
	t.Run("mixed models are sized card by card", func(t *testing.T) {
		c.SetNode(fixture.MakeNode("mixed").Cards("A100", fixture.GiB(80)).Cards("T4", 15360).Obj())
		n := c.Inspect("mixed")[0]
		if n.Cards[0].Total != 80 || n.Cards[1].Total != 15 || n.Source != "inventory" {
			t.Errorf("got %+v", n)
		}
	})
	t.Run("gpushare's allocatable when there is no inventory", func(t *testing.T) {
		c.SetNode(fixture.MakeNode("legacy").Legacy(30, 2).Obj())
		n := c.Inspect("legacy")[0]
		if len(n.Cards) != 2 || n.Cards[0].Total != 15 || n.Source != "allocatable" {
			t.Errorf("got %+v", n)
		}
	})
	t.Run("a broken inventory falls back and says why", func(t *testing.T) {
		nd := fixture.MakeNode("broken").Legacy(16, 1).Obj()
		nd.Annotations[contract.AnnotationInventory] = `{"cards":[]}`
		c.SetNode(nd)
		n := c.Inspect("broken")[0]
		if n.Source != "allocatable" || n.Problem != "inventory lists no card" {
			t.Errorf("got %+v", n)
		}
	})
	t.Run("a deleted node keeps its pods counted until they go", func(t *testing.T) {
		c.SetNode(fixture.MakeNode("d").Cards("T4", fixture.GiB(16)).Obj())
		p := signed(fixture.MakePod().Name("on-d").GPUMem(2), "d", `{"0":{"0":2}}`)
		c.SetPod(p)
		c.DeleteNode("d")
		gone := true
		c.Read(func(_ uint64, lookup func(string) *policy.Node) { gone = lookup("d") == nil })
		if !gone {
			t.Error("deleted node still offered to placement")
		}
		c.DeletePod(p.UID)
		if len(c.Inspect("d")) != 0 {
			t.Error("node kept after its last pod went")
		}
	})
}

func TestStatusUpdatesKeepTheDecision(t *testing.T) {
	c := newCache()
	c.SetNode(fixture.MakeNode("n").Cards("T4", fixture.GiB(16), fixture.GiB(16)).Obj())
	p := signed(fixture.MakePod().Name("a").GPUMem(4), "n", `{"0":{"1":4}}`)
	c.SetPod(p)
	before := c.gen
	p.Status.Phase = corev1.PodRunning
	p.Labels = map[string]string{"x": "y"}
	c.SetPod(p)
	if c.gen != before {
		t.Error("a status update recounted the node")
	}
	// Editing the decision on a running pod does not move its share.
	p.Annotations[contract.AnnotationAllocation] = `{"0":{"0":4}}`
	c.SetPod(p)
	if got, trust := used(c, "n"), trustOf(c, "n", "a"); !cmp.Equal(got, []int64{0, 4}) || trust != Signed {
		t.Errorf("after the annotation was edited: used %v trust %s", got, trust)
	}
	// An untrusted pod's edited claim is read again.
	q := fixture.MakePod().Name("b").Node("n").GPUMem(2).Annotation(contract.AnnotationAllocation, `{"0":{"1":2}}`).Obj()
	c.SetPod(q)
	q.Annotations[contract.AnnotationAllocation] = `{"0":{"0":2}}`
	c.SetPod(q)
	if got := used(c, "n"); !cmp.Equal(got, []int64{2, 4}) {
		t.Errorf("after the claim changed: %v", got)
	}
	// Running out ends the share.
	p.Status.Phase = corev1.PodSucceeded
	c.SetPod(p)
	if got := used(c, "n"); !cmp.Equal(got, []int64{2, 0}) {
		t.Errorf("after success: %v", got)
	}
}
