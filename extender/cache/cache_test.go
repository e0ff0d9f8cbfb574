package cache

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/internal/fixture"
)

var key = []byte("cache-test-key-0123456789")

func newCache() *Cache {
	return New(Options{Unit: contract.GiB, SigningKey: key, WorkloadCoverage: 0.95})
}

// signed returns a bound pod whose decision the extender signed.
func signedPod(w *fixture.PodWrapper, node, alloc string) *corev1.Pod {
	p := w.Node(node).Obj()
	p.Annotations[contract.AnnotationAllocation] = alloc
	p.Annotations[contract.AnnotationNode] = node
	p.Annotations[contract.AnnotationSignature] = contract.Sign(key, string(p.UID), node, alloc)
	return p
}

// rewritten returns a bound pod whose signed plan the device plugin kept
// beside the record it rewrote to what the kubelet gave.
func rewritten(w *fixture.PodWrapper, node, plan, record string) *corev1.Pod {
	p := signedPod(w, node, plan)
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
		pods:      []*corev1.Pod{signedPod(fixture.MakePod().Name("a").GPUMem(4), "n", `{"0":{"1":4}}`)},
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
			signedPod(fixture.MakePod().Name("real").Created(2).GPUMem(12), "n", `{"0":{"1":12}}`),
		},
		wantUsed:  []int64{8, 12},
		wantTrust: map[string]Trust{"forged": Fitted, "real": Signed},
	}, {
		name:      "a signature for another node is not trusted; the claim fits and is used",
		pods:      []*corev1.Pod{onNode(signedPod(fixture.MakePod().Name("moved").GPUMem(4), "elsewhere", `{"0":{"1":4}}`), "n")},
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
			signedPod(fixture.MakePod().Name("w").Container("", "2", ""), "n", `{"0":{"0":16,"1":16}}`),
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
			signedPod(fixture.MakePod().Name("b").GPUMem(6), "n", `{"0":{"1":6}}`),
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
			signedPod(fixture.MakePod().Name("done").GPUMem(4).Phase(corev1.PodSucceeded), "n", `{"0":{"0":4}}`),
			signedPod(fixture.MakePod().Name("failed").GPUMem(4).Phase(corev1.PodFailed), "n", `{"0":{"1":4}}`),
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

// TestIntern: a known node's name is the cache's own copy; another name is
// its bytes as a string of its own.
func TestIntern(t *testing.T) {
	c := newCache()
	c.SetNode(fixture.MakeNode("n1").Cards("T4", fixture.GiB(16)).Obj())
	var own string
	c.Read(func(_ uint64, lookup func(string) *policy.Node) { own = lookup("n1").Name })
	buf := []byte("n1 ghost")
	var known, ghost string
	c.Intern(func(intern func([]byte) string) { known, ghost = intern(buf[:2]), intern(buf[3:]) })
	buf[0], buf[3] = 'x', 'x' // neither string may share the caller's bytes
	if known != "n1" || unsafe.StringData(known) != unsafe.StringData(own) {
		t.Errorf("known name %q is not the cache's copy of %q", known, own)
	}
	if ghost != "ghost" {
		t.Errorf("unknown name %q, want ghost", ghost)
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
	t.Run("gpu-mem without gpu-count: no card, and says why", func(t *testing.T) {
		nd := fixture.MakeNode("nocount").Legacy(16, 1).Obj()
		delete(nd.Status.Allocatable, contract.ResourceGPUCount)
		c.SetNode(nd)
		n := c.Inspect("nocount")[0]
		if len(n.Cards) != 0 || n.Source != "" || !strings.Contains(n.Problem, "without aliyun.com/gpu-count") {
			t.Errorf("got %+v", n)
		}
	})
	t.Run("a deleted node keeps its pods counted until they go", func(t *testing.T) {
		c.SetNode(fixture.MakeNode("d").Cards("T4", fixture.GiB(16)).Obj())
		p := signedPod(fixture.MakePod().Name("on-d").GPUMem(2), "d", `{"0":{"0":2}}`)
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
	p := signedPod(fixture.MakePod().Name("a").GPUMem(4), "n", `{"0":{"1":4}}`)
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

// where says where pod p counts: its state as named in the table at state
// (pod.go), its node and cards; "none" when it counts nowhere.
func where(c *Cache) string {
	for _, n := range c.Inspect("") {
		var cards []int
		var share PodShare
		for _, card := range n.Cards {
			for _, s := range card.Pods {
				if s.Name == "p" {
					cards, share = append(cards, card.Index), s
				}
			}
		}
		for _, s := range n.Unplaced {
			if s.Name == "p" {
				share = s
			}
		}
		if share.Name == "" {
			continue
		}
		state := string(share.Trust)
		if share.Trust == Assumed && !share.Bound {
			state = "binding"
		}
		return fmt.Sprintf("%s %s%v", state, n.Name, cards)
	}
	return "none"
}

// TestStateTable drives pod p (4 GiB) from every state of the table at
// state (pod.go) through every event, on nodes n and m of two 16 GiB cards,
// and checks where it ends: the table, cell by cell.
func TestStateTable(t *testing.T) {
	p := func() *fixture.PodWrapper { return fixture.MakePod().Name("p").Created(2).GPUMem(4) }
	assume := func(c *Cache) error {
		pod := p().Obj()
		req, _ := RequestOf(pod)
		return c.Assume(pod, req, "n", contract.Allocation{0: {1: 4}})
	}
	// Each state: p on card 1 of n, but fitted (its claim of 5 does not
	// match its request: best fit, card 0) and unplaced (w, set up below,
	// holds both cards).
	from := map[string]func(c *Cache){
		"none":    func(*Cache) {},
		"binding": func(c *Cache) { _ = assume(c) },
		"assumed": func(c *Cache) { _ = assume(c); c.Bound("uid-p") },
		"signed":  func(c *Cache) { c.SetPod(signedPod(p(), "n", `{"0":{"1":4}}`)) },
		"claimed": func(c *Cache) {
			c.SetPod(p().Node("n").Annotation(contract.AnnotationAllocation, `{"0":{"1":4}}`).Obj())
		},
		"fitted": func(c *Cache) {
			c.SetPod(p().Node("n").Annotation(contract.AnnotationAllocation, `{"0":{"1":5}}`).Obj())
		},
		"unplaced": func(c *Cache) { c.SetPod(p().Node("n").Obj()) },
	}
	events := []struct {
		name string
		do   func(c *Cache) error
	}{
		{"Assume", assume},
		{"Bound", func(c *Cache) error { c.Bound("uid-p"); return nil }},
		{"Forget", func(c *Cache) error { c.Forget("uid-p"); return nil }},
		{"pending", func(c *Cache) error { c.SetPod(p().Obj()); return nil }},
		// As the informer shows p on n, with an unsigned claim of card 0
		// (an edit, or gpushare's extender): read, it is claimed there.
		{"on its node", func(c *Cache) error {
			c.SetPod(p().Node("n").Annotation(contract.AnnotationAllocation, `{"0":{"0":4}}`).Obj())
			return nil
		}},
		{"on another node", func(c *Cache) error {
			c.SetPod(p().Node("m").Annotation(contract.AnnotationAllocation, `{"0":{"0":4}}`).Obj())
			return nil
		}},
		{"ended", func(c *Cache) error { c.SetPod(p().Node("n").Phase(corev1.PodSucceeded).Obj()); return nil }},
		// A signed decision of 13 on card 1 arrives: 16-13 = 3 left there,
		// so an untrusted p moves to card 0; a trusted p stays (4+13 > 16:
		// the card shows over-committed rather than a decision moved).
		{"recount", func(c *Cache) error {
			c.SetPod(signedPod(fixture.MakePod().Name("q").GPUMem(13), "n", `{"0":{"1":13}}`))
			return nil
		}},
	}
	// The rows of the table, one cell per event in events' order (Assume,
	// Bound, Forget, pending, on its node, on another node, ended, recount);
	// "refused" is an Assume that fails with ErrAlreadyPlaced and changes
	// nothing.
	table := map[string][]string{
		"none":     {"binding n[1]", "none", "none", "none", "claimed n[0]", "claimed m[0]", "none", "none"},
		"binding":  {"refused", "assumed n[1]", "none", "binding n[1]", "assumed n[1]", "claimed m[0]", "none", "binding n[1]"},
		"assumed":  {"refused", "assumed n[1]", "assumed n[1]", "assumed n[1]", "assumed n[1]", "claimed m[0]", "none", "assumed n[1]"},
		"signed":   {"refused", "signed n[1]", "signed n[1]", "signed n[1]", "signed n[1]", "claimed m[0]", "none", "signed n[1]"},
		"claimed":  {"refused", "claimed n[1]", "claimed n[1]", "claimed n[1]", "claimed n[0]", "claimed m[0]", "none", "fitted n[0]"},
		"fitted":   {"refused", "fitted n[0]", "fitted n[0]", "fitted n[0]", "claimed n[0]", "claimed m[0]", "none", "fitted n[0]"},
		"unplaced": {"refused", "unplaced n[]", "unplaced n[]", "unplaced n[]", "unplaced n[]", "claimed m[0]", "none", "unplaced n[]"},
	}
	for state, row := range table {
		for i, ev := range events {
			t.Run(state+"/"+ev.name, func(t *testing.T) {
				c := newCache()
				c.SetNode(fixture.MakeNode("n").Cards("T4", fixture.GiB(16), fixture.GiB(16)).Obj())
				c.SetNode(fixture.MakeNode("m").Cards("T4", fixture.GiB(16), fixture.GiB(16)).Obj())
				if state == "unplaced" {
					// An older signed pod holds both cards whole.
					c.SetPod(signedPod(fixture.MakePod().Name("w").Created(1).Container("", "2", ""), "n", `{"0":{"0":16,"1":16}}`))
				}
				from[state](c)
				before := where(c)
				if !strings.HasPrefix(before, state) {
					t.Fatalf("set up %s, got %s", state, before)
				}
				err := ev.do(c)
				want := row[i]
				if want == "refused" {
					if !errors.Is(err, ErrAlreadyPlaced) {
						t.Errorf("Assume: %v, want ErrAlreadyPlaced", err)
					}
					want = before
				} else if err != nil {
					t.Fatal(err)
				}
				if got := where(c); got != want {
					t.Errorf("%s then %s: %s, want %s", before, ev.name, got, want)
				}
			})
		}
	}
}

// TestNodeUpdates pins when a Node update recounts its node (re-placing its
// untrusted pods and changing its Version, so that every result computed on
// it is computed again): when what placement reads of it changes (cards,
// allocatable CPU and memory), and only then.
func TestNodeUpdates(t *testing.T) {
	base := func() *fixture.NodeWrapper {
		return fixture.MakeNode("n").Cards("T4", fixture.GiB(16), fixture.GiB(16))
	}
	tests := []struct {
		name        string
		update      *corev1.Node
		wantRecount bool
	}{
		{"the same Node again (a resync)", base().Obj(), false},
		{"a heartbeat: conditions, labels, an address", func() *corev1.Node {
			n := base().Obj()
			n.Labels = map[string]string{"topology.kubernetes.io/zone": "b"}
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
			n.Status.Addresses[0].Address = "10.0.0.9"
			return n
		}(), false},
		{"a card turns unhealthy", base().Unhealthy(1).Obj(), true},
		{"another card", base().Cards("T4", fixture.GiB(16)).Obj(), true},
		{"less allocatable CPU", func() *corev1.Node {
			n := base().Obj()
			n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("16")
			return n
		}(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache()
			c.SetNode(base().Obj())
			// An untrusted pod, fitted on card 0.
			c.SetPod(fixture.MakePod().Name("p").Node("n").GPUMem(4).Obj())
			version := func() (v uint64) {
				c.Read(func(_ uint64, lookup func(string) *policy.Node) { v = lookup("n").Version })
				return v
			}
			before := version()
			c.SetNode(tt.update)
			if recounted := version() != before; recounted != tt.wantRecount {
				t.Errorf("recounted: %v, want %v", recounted, tt.wantRecount)
			}
			if got := trustOf(c, "n", "p"); got != Fitted {
				t.Errorf("p is %s, want fitted", got)
			}
		})
	}
}

// TestPublishedNodesNeverChange: a node that placement was given (Read,
// Snapshot) stays as it was while the cache changes, so an evaluation can
// read it without the cache's lock.
func TestPublishedNodesNeverChange(t *testing.T) {
	c := newCache()
	c.SetNode(fixture.MakeNode("n").Cards("T4", fixture.GiB(16)).Obj())
	var read *policy.Node
	c.Read(func(_ uint64, lookup func(string) *policy.Node) { read = lookup("n") })
	snap := c.Snapshot([]string{"n", "ghost"})
	was := read.Clone()
	pod := fixture.MakePod().Name("a").GPUMem(10).Obj()
	req, _ := RequestOf(pod)
	if err := c.Assume(pod, req, "n", contract.Allocation{0: {0: 10}}); err != nil {
		t.Fatal(err)
	}
	c.SetNode(fixture.MakeNode("n").Cards("T4", fixture.GiB(16)).Unhealthy(0).Obj())
	if diff := cmp.Diff(was, read); diff != "" {
		t.Errorf("the node Read gave changed (-was +now):\n%s", diff)
	}
	if snap.Nodes[0].Node != read || snap.Nodes[1].Node != nil {
		t.Errorf("snapshot %+v, want n as Read gave it and no ghost", snap.Nodes)
	}
	now := c.Snapshot([]string{"n"})
	if now.Gen == snap.Gen || now.Nodes[0].Node.Cards[0].Used != 10 || now.Nodes[0].Slot != snap.Nodes[0].Slot {
		t.Errorf("snapshot after: gen %d (was %d), %+v", now.Gen, snap.Gen, now.Nodes[0])
	}
}

// BenchmarkSnapshot measures what an evaluation of 5,000 nodes holds the
// cache's read lock for: looking the nodes up, not rating them.
func BenchmarkSnapshot(b *testing.B) {
	c := newCache()
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("node-%04d", i)
		c.SetNode(fixture.MakeNode(names[i]).Cards("T4", fixture.GiB(16), fixture.GiB(16)).Obj())
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Snapshot(names)
	}
}

// BenchmarkNodeHeartbeat measures a Node update that changes nothing
// placement reads (a kubelet status update), on a node of eight cards and
// eight pods, four of them untrusted.
func BenchmarkNodeHeartbeat(b *testing.B) {
	c := newCache()
	node := fixture.MakeNode("n").Cards("A100", fixture.GiB(80), fixture.GiB(80), fixture.GiB(80), fixture.GiB(80), fixture.GiB(80), fixture.GiB(80), fixture.GiB(80), fixture.GiB(80)).Obj()
	c.SetNode(node)
	for i := range 8 {
		w := fixture.MakePod().Name(fmt.Sprintf("p%d", i)).Created(int64(i)).GPUMem(10)
		if i%2 == 0 {
			c.SetPod(signedPod(w, "n", fmt.Sprintf(`{"0":{"%d":10}}`, i)))
		} else {
			c.SetPod(w.Node("n").Obj())
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		c.SetNode(node)
	}
}

// TestWorkloadCoverage: a coverage of 0 is the policy's own, never a
// workload estimate that keeps no shape.
func TestWorkloadCoverage(t *testing.T) {
	fill, err := policy.Get(policy.Fill)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		opts   Options
		shapes int // of the 100 pods' two shapes, 99 and 1
	}{
		// fill keeps 0.99 of the pods: the 99 of one shape.
		{"fill's own", Options{Policy: fill}, 1},
		{"configured", Options{Policy: fill, WorkloadCoverage: 1}, 2},
		// no policy: DefaultCoverage, 0.95.
		{"no policy", Options{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Unit, tc.opts.SigningKey = contract.GiB, key
			c := New(tc.opts)
			for i := range 100 {
				mem := int64(4)
				if i == 0 {
					mem = 8
				}
				c.SetPod(fixture.MakePod().Name(fmt.Sprintf("p%d", i)).GPUMem(mem).Obj())
			}
			w := c.Workload()
			if w == nil || len(w.Shapes) != tc.shapes {
				t.Fatalf("workload %+v, want %d shapes", w, tc.shapes)
			}
		})
	}
}

// TestCapacity: the workload estimate's capacity is the known nodes by
// class, healthy cards counted by model, with the allocatable CPU and
// memory where the Node gives CPU (fill weighs model-limited pods and opens
// nodes by it).
func TestCapacity(t *testing.T) {
	c := newCache()
	g := fixture.GiB(16)
	c.SetNode(fixture.MakeNode("a").Cards("T4", g, g).Obj())
	c.SetNode(fixture.MakeNode("b").Cards("T4", g, g).Obj())
	c.SetNode(fixture.MakeNode("sick").Cards("T4", g, g).Unhealthy(1).Obj())
	noCPU := fixture.MakeNode("no-cpu").Cards("A100", fixture.GiB(80)).Obj()
	delete(noCPU.Status.Allocatable, corev1.ResourceCPU)
	c.SetNode(noCPU)
	c.SetNode(fixture.MakeNode("gone").Cards("T4", g).Obj())
	c.DeleteNode("gone")
	c.mu.RLock()
	got := c.capacity()
	c.mu.RUnlock()
	mem := int64(256 << 10) // MiB
	want := policy.Capacity{
		{Model: "T4", Cards: 2, CPUMilli: 32000, MemMiB: mem}: 2,
		{Model: "T4", Cards: 1, CPUMilli: 32000, MemMiB: mem}: 1,
		{Model: "A100", Cards: 1}:                             1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("capacity (-want +got):\n%s", diff)
	}
}

// TestSnapshotIntoReusesItsBuffer: a snapshot into a buffer that held other
// nodes gives exactly the nodes asked, an unknown one empty, and reuses the
// buffer's memory when it has room.
func TestSnapshotIntoReusesItsBuffer(t *testing.T) {
	c := newCache()
	g := fixture.GiB(16)
	c.SetNode(fixture.MakeNode("a").Cards("T4", g).Obj())
	c.SetNode(fixture.MakeNode("b").Cards("T4", g).Obj())
	var s Snapshot
	c.SnapshotInto(&s, []string{"a", "b", "a"})
	buf := &s.Nodes[0]
	c.SnapshotInto(&s, []string{"b", "unknown"})
	if len(s.Nodes) != 2 || s.Nodes[0].Node == nil || s.Nodes[0].Node.Name != "b" || s.Nodes[1].Node != nil {
		t.Fatalf("snapshot of b and an unknown node: %+v", s.Nodes)
	}
	if &s.Nodes[0] != buf {
		t.Error("the buffer had room and was not reused")
	}
	if want := c.Snapshot([]string{"b", "unknown"}); !reflect.DeepEqual(want, s) {
		t.Errorf("SnapshotInto gave %+v, Snapshot %+v", s, want)
	}
}
