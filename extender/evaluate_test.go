package extender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/internal/fixture"
)

// TestEvaluateKeepsAnswers pins the rule by which an evaluation reuses an
// answer (policy.Answers): a node's answer for a request shape is computed
// again when the node has changed since, and only then, whichever nodes the
// evaluations in between were asked about. A reused answer is the one kept,
// so its miss is the same pointer; a new one is a new pointer.
func TestEvaluateKeepsAnswers(t *testing.T) {
	srv := benchServer(t, "binpack", contract.GiB)
	ctx := context.Background()
	// a, b and c: one 16 GiB card each, 14 held: a share of 4 fits nowhere.
	all := []string{"a", "b", "c"}
	heldNodes(t, srv, all...)
	req, _ := cache.RequestOf(fixture.MakePod().Name("p").GPUMem(4).Obj())
	first := srv.evaluate(ctx, req, all)
	for i, r := range first.results {
		if !r.known() || r.miss == nil {
			t.Fatalf("node %s: %+v, want unfit", all[i], r)
		}
	}
	// Another pod of the shape, on b alone (as prioritize after a filter).
	if b := srv.evaluate(ctx, req, []string{"b"}); b.results[0].miss != first.results[1].miss {
		t.Error("b was rated again, unchanged")
	}
	// a changes: 14 freed (16 free), the share fits there now.
	srv.cache.Forget("uid-held-a")
	again := srv.evaluate(ctx, req, all)
	if !again.results[0].fits() {
		t.Errorf("a after its 14 went: %+v, want it to fit", again.results[0])
	}
	for i := 1; i < 3; i++ {
		if again.results[i].miss != first.results[i].miss {
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
	if r := first.results[0]; r.fits() || r.miss != firstA.miss {
		t.Errorf("the first evaluation's answer for a changed to %+v, want %+v", *r, firstA)
	}
	if again.results[1] != first.results[1] {
		t.Error("b's answer was copied or rated again, unchanged since the first evaluation")
	}
	if r := again.results[2]; r.known() || r.fits() {
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

// TestEvaluateWithMeasures checks, under fill and FGD, that evaluations
// that start from the nodes' kept measures (policy.Measures, shared by
// every request shape) answer what Place answers afresh, for pods of
// several shapes in turn (shares and CPU, more shares than a node keeps
// the card costs of) and after nodes change, and that a node named many
// times in one request is answered alike at every position (run with -race:
// its positions must not share its measures between workers).
func TestEvaluateWithMeasures(t *testing.T) {
	for _, pol := range []string{"fill", "fgd"} {
		t.Run(pol, func(t *testing.T) {
			srv, names := cluster5000(t, pol)
			names = names[:200]
			ctx := context.Background()
			for k, gib := range []int64{20, 7, 40, 20, 3, 11, 13, 7, 20, 20} {
				if k == 3 {
					// 50 nodes change: their first cards' shares go.
					for i := range 50 {
						for j := range 8 {
							srv.cache.Forget(types.UID(fmt.Sprintf("uid-fill-%d-%d", i, j)))
						}
					}
				}
				cpu := fmt.Sprintf("%dm", 1+300*k)
				req, _ := cache.RequestOf(fixture.MakePod().Name(fmt.Sprintf("p%d", k)).Container(fmt.Sprint(gib), "", cpu).Obj())
				asked := append(slices.Clone(names), slices.Repeat([]string{names[7]}, 40)...)
				ev := srv.evaluate(ctx, req, asked)
				w := srv.workload()
				srv.cache.Read(func(_ uint64, lookup func(string) *policy.Node) {
					for i, name := range asked {
						want, wantU := policy.Place(lookup(name), req, srv.policy, w)
						got := ev.results[i]
						if (got.miss == nil) != (wantU == nil) || got.decision.Score != want.Score || !cmp.Equal(got.decision.Allocation(), want.Allocation()) {
							t.Fatalf("pod %d (%d GiB), %s at %d: evaluated %+v, afresh %+v %v", k, gib, name, i, got, want, wantU)
						}
					}
				})
			}
		})
	}
}

// TestMisses checks that the misses an evaluation shares between unfit
// nodes are each node's own: its Unfit's content, its message and the
// message as encoding/json writes it. The key they are shared by must be
// all of Unfit but its lists of models (whose Unfits are not shared): a
// field added to Unfit must be added to unfitKey.
func TestMisses(t *testing.T) {
	known := map[string]bool{"Kind": true, "Container": true, "Need": true, "Have": true, "Cards": true, "Models": true, "NodeModels": true, "Unresolvable": true}
	ut := reflect.TypeFor[policy.Unfit]()
	for i := range ut.NumField() {
		if !known[ut.Field(i).Name] {
			t.Errorf("policy.Unfit has a field %s that unfitKey does not know", ut.Field(i).Name)
		}
	}
	rng := rand.New(rand.NewSource(1))
	ms := misses{unit: contract.GiB}
	for range 5000 {
		u := &policy.Unfit{
			Kind:         policy.UnfitKind(rng.Intn(int(policy.UnfitSearchBudget) + 1)),
			Container:    []string{"c0", "c<1>"}[rng.Intn(2)],
			Need:         int64(rng.Intn(4)),
			Have:         int64(rng.Intn(4)),
			Cards:        rng.Intn(3),
			Unresolvable: rng.Intn(2) == 0,
		}
		if rng.Intn(4) == 0 {
			u.Models, u.NodeModels = []string{"A100"}, []string{[]string{"1 x T4", "2 x L4"}[rng.Intn(2)]}
		}
		want := "gpupack: " + u.Message(contract.GiB)
		wantJSON, _ := json.Marshal(want)
		if got := ms.of(u); !cmp.Equal(got.unfit, u) || got.text != want || !bytes.Equal(got.json, wantJSON) {
			t.Fatalf("%+v: miss of %+v, %q (%s); want %q (%s)", *u, *got.unfit, got.text, got.json, want, wantJSON)
		}
	}
	// Kinds, containers, needs, haves, cards and resolvability: the misses
	// there can be.
	if most := (int(policy.UnfitSearchBudget) + 1) * 2 * 4 * 4 * 3 * 2; len(ms.made) == 0 || len(ms.made) > most {
		t.Errorf("%d misses made for 5,000 unfit nodes, of at most %d different", len(ms.made), most)
	}
}

// TestByName checks byName's order against sorting the names' bytes, on
// names of a few letters and zeros that share a prefix, end inside it or
// after it, and come twice.
func TestByName(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for range 2000 {
		prefix := strings.Repeat("x", rng.Intn(12))
		names := make([]string, 1+rng.Intn(40))
		for i := range names {
			b := []byte(prefix[:rng.Intn(len(prefix)+1)])
			if rng.Intn(3) > 0 {
				b = []byte(prefix)
			}
			for range rng.Intn(12) {
				b = append(b, "\x00ab"[rng.Intn(3)])
			}
			names[i] = string(b)
		}
		var at []int
		for i := range names {
			if rng.Intn(4) > 0 {
				at = append(at, i)
			}
		}
		if len(at) == 0 {
			continue
		}
		want := slices.Clone(at)
		slices.SortStableFunc(want, func(i, j int) int { return strings.Compare(names[i], names[j]) })
		if got := byName(names, at); !slices.Equal(got, want) {
			t.Fatalf("names %q at %v: byName %v, want %v", names, at, got, want)
		}
	}
}
