package extender

import (
	"context"
	"testing"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/internal/fixture"
)

// TestEvaluateKeepsAnswers pins the rule by which an evaluation reuses an
// answer (policy.Answers): a node's answer for a request shape is computed
// again when the node has changed since, and only then, whichever nodes the
// evaluations in between were asked about. A reused answer is the one kept,
// so its Unfit is the same pointer; a new one is a new pointer.
func TestEvaluateKeepsAnswers(t *testing.T) {
	srv := benchServer(t, "binpack", contract.GiB)
	ctx := context.Background()
	// a, b and c: one 16 GiB card each, 14 held: a share of 4 fits nowhere.
	all := []string{"a", "b", "c"}
	heldNodes(t, srv, all...)
	req, _ := cache.RequestOf(fixture.MakePod().Name("p").GPUMem(4).Obj())
	first := srv.evaluate(ctx, req, all)
	for i, r := range first.results {
		if !r.known || r.unfit == nil {
			t.Fatalf("node %s: %+v, want unfit", all[i], r)
		}
	}
	// Another pod of the shape, on b alone (as prioritize after a filter).
	if b := srv.evaluate(ctx, req, []string{"b"}); b.results[0].unfit != first.results[1].unfit {
		t.Error("b was rated again, unchanged")
	}
	// a changes: 14 freed (16 free), the share fits there now.
	srv.cache.Forget("uid-held-a")
	again := srv.evaluate(ctx, req, all)
	if !again.results[0].fits() {
		t.Errorf("a after its 14 went: %+v, want it to fit", again.results[0])
	}
	for i := 1; i < 3; i++ {
		if again.results[i].unfit != first.results[i].unfit {
			t.Errorf("%s was rated again, unchanged since the first evaluation", all[i])
		}
	}
}

// TestEvaluationIsImmutable pins that an evaluation shares its answers with
// the answers kept for the shape without copying them, and that a later
// evaluation never changes them: filter's evaluation, kept in the memo for
// prioritize and bind, still says what it said after a node changed and was
// rated again.
func TestEvaluationIsImmutable(t *testing.T) {
	srv := benchServer(t, "binpack", contract.GiB)
	ctx := context.Background()
	// a and b: one 16 GiB card each, 14 held: a share of 4 fits on neither.
	all := []string{"a", "b", "ghost"}
	heldNodes(t, srv, all[:2]...)
	req, _ := cache.RequestOf(fixture.MakePod().Name("p").GPUMem(4).Obj())
	first := srv.evaluate(ctx, req, all)
	firstA := *first.results[0]
	// a changes: 14 freed, so the share fits there now; b does not change.
	srv.cache.Forget("uid-held-a")
	again := srv.evaluate(ctx, req, all)
	if !again.results[0].fits() {
		t.Fatalf("a after its 14 went: %+v, want it to fit", *again.results[0])
	}
	if r := first.results[0]; r.fits() || r.version != firstA.version || r.unfit != firstA.unfit || r.reason != firstA.reason {
		t.Errorf("the first evaluation's answer for a changed to %+v, want %+v", *r, firstA)
	}
	if again.results[1] != first.results[1] {
		t.Error("b's answer was copied or rated again, unchanged since the first evaluation")
	}
	if r := again.results[2]; r.known || r.fits() {
		t.Errorf("ghost: %+v, want unknown", *r)
	}
}

// heldNodes adds nodes of one 16 GiB card each, with 14 of it held by a pod
// named held-<node> (uid-held-<node>).
func heldNodes(t *testing.T, srv *Server, names ...string) {
	t.Helper()
	for _, n := range names {
		srv.cache.SetNode(fixture.MakeNode(n).Cards("T4", fixture.GiB(16)).Obj())
		held := fixture.MakePod().Name("held-" + n).GPUMem(14).Obj()
		req, _ := cache.RequestOf(held)
		if err := srv.cache.Assume(held, req, n, contract.Allocation{0: {0: 14}}); err != nil {
			t.Fatal(err)
		}
	}
}
