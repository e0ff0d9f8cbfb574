package extender

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/internal/fixture"
)

// schedule runs filter, prioritize and bind for a pod as kube-scheduler
// would, binding to the best-scored node; it returns the node and the
// bind error.
func (e *env) schedule(pod *corev1.Pod, nodes ...string) (string, string) {
	e.t.Helper()
	var fr extenderv1.ExtenderFilterResult
	e.post(filterPath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes}, &fr)
	if len(*fr.NodeNames) == 0 {
		return "", "no node fits"
	}
	var pr extenderv1.HostPriorityList
	e.post(prioritizePath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: fr.NodeNames}, &pr)
	best := pr[0]
	for _, h := range pr {
		if h.Score > best.Score {
			best = h
		}
	}
	var br extenderv1.ExtenderBindingResult
	e.post(bindPath, extenderv1.ExtenderBindingArgs{PodName: pod.Name, PodNamespace: pod.Namespace, PodUID: pod.UID, Node: best.Host}, &br)
	return best.Host, br.Error
}

// bindingSince returns the one Binding the extender sent since the fake
// had seen mark actions, failing the test unless that Binding was the only
// write: the decision and the bind are one API call.
func (e *env) bindingSince(t *testing.T, mark int) *corev1.Binding {
	t.Helper()
	var b *corev1.Binding
	for _, a := range e.client.Actions()[mark:] {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		c, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetResource().Resource != "pods" || a.GetSubresource() != "binding" {
			t.Errorf("the bind wrote %s %s/%s: want only the Binding", a.GetVerb(), a.GetResource().Resource, a.GetSubresource())
			continue
		}
		if b != nil {
			t.Errorf("a second Binding for %s", b.Name)
		}
		b = c.GetObject().(*corev1.Binding)
	}
	if b == nil {
		t.Fatal("the extender sent no Binding")
	}
	return b
}

func TestBindRecordsTheDecision(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	tests := []struct {
		name      string
		pod       *corev1.Pod
		wantNode  string
		wantAlloc string
		wantIdx   string
		wantTotal string
		wantDev   string
	}{
		// n1 has 6 GiB free on card 0: the fullest fit.
		{"one share", fixture.MakePod().Name("one").GPUMem(4).Obj(), "n1", `{"0":{"0":4}}`, "0", "4", "16"},
		// two containers, 3 and 5 GiB: n2 (n1 has 2 left): 5 best-fits card 0, then 3 too.
		{"two GPU containers", fixture.MakePod().Name("two").GPUMem(3).GPUMem(5).Obj(), "n2", `{"0":{"0":3},"1":{"0":5}}`, "0", "8", "16"},
		// 4 GiB on each of two cards: n2 has two cards (8 left on card 0, 16 on card 1) and n4 two of 16.
		// binpack: n2 is left with 8-2... free after: n2 24-8=16, n4 32-8=24: n2.
		{"a share on each of two cards", fixture.MakePod().Name("multi").Container("8", "2", "").Obj(), "n2", `{"0":{"0":4,"1":4}}`, "0", "8", "16"},
		// whole cards: only n4 has two unused cards.
		{"whole cards", fixture.MakePod().Name("whole").Container("", "2", "").Obj(), "n4", `{"0":{"0":16,"1":16}}`, "0", "32", "16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := e.create(tt.pod)
			mark := len(e.client.Actions())
			node, errMsg := e.schedule(pod, "n1", "n2", "n3", "n4")
			if errMsg != "" {
				t.Fatalf("bind: %s", errMsg)
			}
			// The decision travels on the Binding, with the pod's UID as
			// the precondition.
			b := e.bindingSince(t, mark)
			if b.Name != pod.Name || b.Namespace != pod.Namespace || b.UID != pod.UID {
				t.Errorf("Binding for %s/%s uid %q, want %s/%s uid %q", b.Namespace, b.Name, b.UID, pod.Namespace, pod.Name, pod.UID)
			}
			if b.Target.Kind != "Node" || b.Target.Name != tt.wantNode {
				t.Errorf("Binding target %s %q, want Node %q", b.Target.Kind, b.Target.Name, tt.wantNode)
			}
			want := map[string]string{
				contract.AnnotationAllocation: tt.wantAlloc, contract.AnnotationIndex: tt.wantIdx,
				contract.AnnotationPodMem: tt.wantTotal, contract.AnnotationDevMem: tt.wantDev,
				contract.AnnotationAssigned: "false", contract.AnnotationNode: tt.wantNode,
				contract.AnnotationSignature: contract.Sign(testKey, string(pod.UID), tt.wantNode, tt.wantAlloc),
			}
			if _, err := strconv.ParseInt(b.Annotations[contract.AnnotationAssumeTime], 10, 64); err != nil {
				t.Errorf("assume time %q: %v", b.Annotations[contract.AnnotationAssumeTime], err)
			}
			want[contract.AnnotationAssumeTime] = b.Annotations[contract.AnnotationAssumeTime]
			if diff := cmp.Diff(want, b.Annotations); diff != "" {
				t.Errorf("Binding annotations (-want +got):\n%s", diff)
			}
			// The pod, once bound (the fake merges the Binding's
			// annotations as the API server does), carries them.
			got := e.pod(pod.Namespace, pod.Name)
			if node != tt.wantNode || got.Spec.NodeName != tt.wantNode {
				t.Fatalf("bound to %q (spec %q), want %q", node, got.Spec.NodeName, tt.wantNode)
			}
			for k, v := range want {
				if got.Annotations[k] != v {
					t.Errorf("pod annotation %s = %q, want %q", k, got.Annotations[k], v)
				}
			}
			if !contract.Verify(testKey, string(got.UID), tt.wantNode, tt.wantAlloc, got.Annotations[contract.AnnotationSignature]) {
				t.Error("the decision is not signed")
			}
		})
	}
}

func TestBindWithoutGPU(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	pod := e.create(fixture.MakePod().Name("cpu").Container("", "", "1").Obj())
	mark := len(e.client.Actions())
	var br extenderv1.ExtenderBindingResult
	e.post(bindPath, extenderv1.ExtenderBindingArgs{PodName: "cpu", PodNamespace: "default", PodUID: pod.UID, Node: "n3"}, &br)
	if br.Error != "" {
		t.Fatal(br.Error)
	}
	b := e.bindingSince(t, mark)
	if b.UID != pod.UID || b.Target.Name != "n3" || len(b.Annotations) != 0 {
		t.Errorf("Binding uid %q to %q with annotations %v, want uid %q to n3 with none", b.UID, b.Target.Name, b.Annotations, pod.UID)
	}
	if got := e.pod("default", "cpu"); got.Spec.NodeName != "n3" {
		t.Errorf("bound to %q, want n3", got.Spec.NodeName)
	}
}

func TestBindUsesTheScoredCards(t *testing.T) {
	// fgd with a learned workload of 8 GiB shares: on a node with cards of 16
	// used 4 and 0, a 4 GiB share goes to card 0 (8 left: one more 8 fits
	// there), not card 1 (12 left, 4 stranded by the next 8).
	objs := []runtime.Object{fixture.MakeNode("n").Cards("T4", fixture.GiB(16), fixture.GiB(16)).Obj(),
		fixture.MakePod().Name("held").Node("n").GPUMem(4).Annotation(contract.AnnotationAllocation, `{"0":{"0":4}}`).Obj()}
	for i := range 5 {
		objs = append(objs, fixture.MakePod().Name("seen"+strconv.Itoa(i)).GPUMem(8).Obj())
	}
	e := newEnv(t, "fgd", objs...)
	pod := e.create(fixture.MakePod().Name("p").GPUMem(4).Obj())
	var pr extenderv1.HostPriorityList
	e.post(prioritizePath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: names("n")}, &pr)
	ev := e.srv.memo.get(pod.UID)
	if ev == nil {
		t.Fatal("prioritize kept no decision")
	}
	r, ok := ev.result("n")
	if !ok || !r.fits() {
		t.Fatal("prioritize kept no decision for n")
	}
	scored := r.decision.Allocation().String()
	var br extenderv1.ExtenderBindingResult
	e.post(bindPath, extenderv1.ExtenderBindingArgs{PodName: "p", PodNamespace: "default", PodUID: pod.UID, Node: "n"}, &br)
	if br.Error != "" {
		t.Fatal(br.Error)
	}
	got := e.pod("default", "p").Annotations[contract.AnnotationAllocation]
	if got != scored || got != `{"0":{"0":4}}` {
		t.Errorf("bound %s, scored %s, want {\"0\":{\"0\":4}}", got, scored)
	}
}

func TestBindFailures(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	bind := func(name string, uid types.UID, node string) string {
		var br extenderv1.ExtenderBindingResult
		e.post(bindPath, extenderv1.ExtenderBindingArgs{PodName: name, PodNamespace: "default", PodUID: uid, Node: node}, &br)
		return br.Error
	}
	t.Run("a pod that does not exist", func(t *testing.T) {
		if got := bind("nobody", "u", "n2"); got != "pod default/nobody does not exist" {
			t.Errorf("error %q", got)
		}
	})
	t.Run("a pod that was recreated", func(t *testing.T) {
		e.create(fixture.MakePod().Name("re").GPUMem(1).Obj())
		if got := bind("re", "an-older-uid", "n2"); !strings.Contains(got, "it was recreated") {
			t.Errorf("error %q", got)
		}
	})
	t.Run("a node that does not fit any more", func(t *testing.T) {
		pod := e.create(fixture.MakePod().Name("big").GPUMem(8).Obj())
		if got := bind("big", pod.UID, "n1"); got != `pod default/big no longer fits node n1: largest free card has 6 GiB, container "c0" needs 8 GiB` {
			t.Errorf("error %q", got)
		}
	})
	t.Run("a vanished node", func(t *testing.T) {
		pod := e.create(fixture.MakePod().Name("lost").GPUMem(1).Obj())
		if got := bind("lost", pod.UID, "ghost"); got != "node ghost is not known to the extender" {
			t.Errorf("error %q", got)
		}
	})
	t.Run("a failed Binding rolls the decision back", func(t *testing.T) {
		pod := e.create(fixture.MakePod().Name("rollback").GPUMem(6).Obj())
		e.failBind = true
		if got := bind("rollback", pod.UID, "n1"); !strings.HasPrefix(got, "binding pod default/rollback to n1: ") || !strings.Contains(got, "injected failure") {
			t.Fatalf("error %q", got)
		}
		if _, _, ok := e.cache.Placed(pod.UID); ok {
			t.Fatal("the failed decision is still assumed")
		}
		got := e.pod("default", "rollback")
		if got.Spec.NodeName != "" {
			t.Fatal("pod bound")
		}
		// The decision and the bind are one write: a failed bind leaves
		// no decision on the pending pod.
		if a, ok := got.Annotations[contract.AnnotationAllocation]; ok {
			t.Errorf("the unbound pod carries the allocation %s", a)
		}
		// The 6 GiB are free again: the same bind now succeeds.
		if got := bind("rollback", pod.UID, "n1"); got != "" {
			t.Fatalf("second bind: %s", got)
		}
	})
	t.Run("a pod bound twice", func(t *testing.T) {
		// Bound as the extender's informer sees it: until then the cache
		// refuses the second bind (already placed), as it should, but
		// with another message.
		e.eventually("the pod lister sees rollback bound", func() bool {
			p, err := e.srv.pods.Pods("default").Get("rollback")
			return err == nil && p.Spec.NodeName == "n1"
		})
		if got := bind("rollback", e.pod("default", "rollback").UID, "n2"); !strings.Contains(got, "already bound to n1") {
			t.Errorf("error %q", got)
		}
	})
}

// TestRestartLosesNothing binds pods with one extender, then starts a
// second on the resulting objects: the cards are counted the same, and a
// forged annotation is not trusted.
func TestRestartLosesNothing(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	for i, mem := range []int64{2, 4, 8, 8} {
		pod := e.create(fixture.MakePod().Name("p" + strconv.Itoa(i)).GPUMem(mem).Obj())
		if _, errMsg := e.schedule(pod, "n1", "n2", "n4"); errMsg != "" {
			t.Fatal(errMsg)
		}
	}
	// A user forges a decision on a pending pod: card 0 of n2 for 16 GiB.
	e.create(fixture.MakePod().Name("forged").GPUMem(16).
		Annotation(contract.AnnotationAllocation, `{"0":{"0":16}}`).Annotation(contract.AnnotationNode, "n2").
		Annotation(contract.AnnotationSignature, "bogus").Obj())
	before := e.cache.Inspect("")
	list, err := e.client.CoreV1().Pods("").List(e.ctx, metav1ListOptions())
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	objs = append(objs, cluster()[:4]...)
	for i := range list.Items {
		objs = append(objs, &list.Items[i])
	}
	again := newEnv(t, "binpack", objs...)
	after := again.cache.Inspect("")
	if diff := cmp.Diff(allocations(before), allocations(after)); diff != "" {
		t.Errorf("per-card allocation changed across the restart (-before +after):\n%s", diff)
	}
	for _, n := range after {
		for _, c := range n.Cards {
			for _, p := range c.Pods {
				if p.Name == "forged" {
					t.Errorf("the forged pending pod is counted on %s card %d", n.Name, c.Index)
				}
				if p.Name != "old" && p.Trust != cache.Signed {
					t.Errorf("pod %s rebuilt as %s, want signed", p.Name, p.Trust)
				}
			}
		}
	}
}

func allocations(nodes []cache.NodeInfo) map[string][]int64 {
	out := map[string][]int64{}
	for _, n := range nodes {
		for _, c := range n.Cards {
			out[n.Name] = append(out[n.Name], c.Allocated)
		}
	}
	return out
}

func metav1ListOptions() metav1.ListOptions { return metav1.ListOptions{} }
