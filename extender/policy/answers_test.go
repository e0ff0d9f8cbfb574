package policy

import (
	"testing"

	"github.com/gpupack/gpupack/contract"
)

// versionedNode is a node of one 16-unit card with used units held, at a
// version.
func versionedNode(used int64, version uint64) *Node {
	return &Node{Name: "n", Version: version, Cards: []Card{{Index: 0, Model: "T4", Total: 16, Used: used, Healthy: true}}}
}

// TestAnswers pins the reuse rule: an answer kept for a slot answers the
// node in it again if and only if the node's Version is the one it was kept
// at, under the workload estimate it was computed under.
func TestAnswers(t *testing.T) {
	w1, w2 := &Workload{}, &Workload{}
	tests := []struct {
		name string
		// keep is the node an answer is kept for, in slot 0 under w1.
		keep *Node
		// then asks for slot with node under w.
		slot int
		node *Node
		w    *Workload
		want bool // the answer kept is returned
	}{
		{"same slot, same version", versionedNode(4, 7), 0, versionedNode(4, 7), w1, true},
		// The version is the node's word that nothing changed: the answers
		// do not look at the cards.
		{"same version, cards that differ", versionedNode(4, 7), 0, versionedNode(12, 7), w1, true},
		{"another version", versionedNode(4, 7), 0, versionedNode(4, 8), w1, false},
		{"another slot", versionedNode(4, 7), 1, versionedNode(4, 7), w1, false},
		{"a slot past the end", versionedNode(4, 7), 100, versionedNode(4, 7), w1, false},
		{"another workload estimate", versionedNode(4, 7), 0, versionedNode(4, 7), w2, false},
		// The simulator's nodes start at version 0: an empty slot is no
		// answer at version 0.
		{"nothing kept, version 0", nil, 0, versionedNode(4, 0), w1, false},
		{"kept at version 0", versionedNode(4, 0), 0, versionedNode(4, 0), w1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := NewAnswers[string](w1, 2)
			if tt.keep != nil {
				as.Keep(0, tt.keep, "kept")
			}
			got := as.For(tt.w).Get(tt.slot, tt.node)
			if (got != nil) != tt.want {
				t.Errorf("answer %v, want one: %v", got, tt.want)
			}
			if got != nil && *got != "kept" {
				t.Errorf("answer %q, want the one kept", *got)
			}
		})
	}
}

func TestAnswersKeep(t *testing.T) {
	as := NewAnswers[int](nil, 0)
	// Keep grows the answers to the slot, and replaces what a slot held.
	as.Keep(5, versionedNode(12, 3), 1)
	if a := as.Get(5, versionedNode(12, 3)); a == nil || *a != 1 {
		t.Errorf("after Keep(5): %v, want 1", a)
	}
	if as.Get(4, versionedNode(12, 0)) != nil {
		t.Error("a slot never kept answers at version 0")
	}
	as.Keep(5, versionedNode(0, 4), 2)
	if as.Get(5, versionedNode(12, 3)) != nil {
		t.Error("the answer at version 3 survived a Keep at version 4")
	}
	if a := as.Get(5, versionedNode(0, 4)); a == nil || *a != 2 {
		t.Errorf("after the second Keep(5): %v, want 2", a)
	}
	as.Reset(nil)
	if as.Get(5, versionedNode(0, 4)) != nil {
		t.Error("an answer survived Reset")
	}
	var none *Answers[int]
	if got := none.For(nil); got == nil || got.Get(0, versionedNode(0, 0)) != nil {
		t.Errorf("For on no answers: %v, want new, empty ones", got)
	}
}

func TestRequestKey(t *testing.T) {
	perPod := &Policy{PerPod: true}
	shared := &Policy{}
	base := func() *Request {
		return &Request{Containers: []contract.ContainerRequest{{Index: 0, Name: "c0", Mem: 4}}, CPUMilli: 1000, MemMiB: 512, Salt: 1}
	}
	tests := []struct {
		name   string
		change func(r *Request)
		p      *Policy
		same   bool // the key stays base's
	}{
		{"the same request", func(*Request) {}, shared, true},
		{"another pod of the same shape", func(r *Request) { r.Salt = 2 }, shared, true},
		{"another pod under a policy that draws per pod", func(r *Request) { r.Salt = 2 }, perPod, false},
		{"another share", func(r *Request) { r.Containers[0].Mem = 5 }, shared, false},
		{"shares on two cards", func(r *Request) { r.Containers[0].Count = 2 }, shared, false},
		{"another container name (reasons name it)", func(r *Request) { r.Containers[0].Name = "main" }, shared, false},
		{"another container index", func(r *Request) { r.Containers[0].Index = 1 }, shared, false},
		{"another CPU", func(r *Request) { r.CPUMilli = 999 }, shared, false},
		{"another memory", func(r *Request) { r.MemMiB = 511 }, shared, false},
		{"limited to a model", func(r *Request) { r.Models = []string{"T4"} }, shared, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.change(r)
			if got := RequestKey(r, tt.p) == RequestKey(base(), tt.p); got != tt.same {
				t.Errorf("same key: %v, want %v (%q, %q)", got, tt.same, RequestKey(r, tt.p), RequestKey(base(), tt.p))
			}
		})
	}
}
