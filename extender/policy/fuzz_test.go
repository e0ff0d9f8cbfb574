package policy

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/gpupack/gpupack/contract"
)

// FuzzPlace builds a node and a request from bytes and checks every policy:
// any placement one returns is valid (every share on a distinct, healthy,
// allowed card with room, whole cards unused, nothing over-committed), and
// all of them agree on whether the pod fits (fitDisagreement).
func FuzzPlace(f *testing.F) {
	f.Add([]byte{4, 16, 0, 16, 8, 80, 0, 1}, []byte{4, 0, 8, 2, 0, 1})
	f.Add([]byte{2, 16, 16, 16, 0}, []byte{0, 2, 3, 0})
	f.Fuzz(func(t *testing.T, cards, reqs []byte) {
		n := &Node{Name: "n"}
		for i := 0; i+1 < len(cards) && len(n.Cards) < 16; i += 2 {
			total := int64(cards[i]%96) + 1
			n.Cards = append(n.Cards, Card{Index: len(n.Cards), Model: []string{"T4", "A100"}[cards[i]%2], Total: total, Used: min(int64(cards[i+1]%97), total), Healthy: cards[i+1]%7 != 0})
		}
		r := &Request{}
		for i := 0; i+1 < len(reqs) && len(r.Containers) < 4; i += 2 {
			count := int64(reqs[i+1] % 4)
			mem := int64(reqs[i] % 40)
			if count > 0 {
				mem -= mem % count
			}
			if mem == 0 && count == 0 {
				mem = 1
			}
			r.Containers = append(r.Containers, contract.ContainerRequest{Index: len(r.Containers), Name: "c", Mem: mem, Count: count})
		}
		if len(r.Containers) == 0 {
			return
		}
		if len(reqs)%3 == 0 {
			r.Models = []string{"A100"}
		}
		w := NewWorkload(map[Shape]int64{{Share: 8, Cards: 1}: 3, {Cards: 1}: 1}, 1)
		unfit := map[string]*Unfit{}
		for _, name := range Names() {
			p, _ := Get(Name(name))
			d, u := Place(n, r, p, w)
			unfit[name] = u
			if u == nil {
				check(t, n, r, d.Allocation())
			}
		}
		if msg := fitDisagreement(unfit); msg != "" {
			t.Fatal(msg)
		}
	})
}

// fitDisagreement names the policies that found no placement where another
// found one, with their reasons ("" when they agree). Whether a pod fits a
// node does not depend on the policy, only which cards it gets does; the
// one exception is a search that ran out of its budget (UnfitSearchBudget),
// as a policy's order of cards may take longer to find a placement.
func fitDisagreement(unfit map[string]*Unfit) string {
	var fitted, failed []string
	for name, u := range unfit {
		switch {
		case u == nil:
			fitted = append(fitted, name)
		case u.Kind != UnfitSearchBudget:
			failed = append(failed, name+": "+u.Message(contract.GiB))
		}
	}
	if len(fitted) == 0 || len(failed) == 0 {
		return ""
	}
	sort.Strings(fitted)
	sort.Strings(failed)
	return fmt.Sprintf("%s found a placement, these did not: %s", strings.Join(fitted, ", "), strings.Join(failed, "; "))
}

// TestFitDisagreement pins the fuzz test's check: every policy is compared,
// whichever order they come in.
func TestFitDisagreement(t *testing.T) {
	together := &Unfit{Kind: UnfitTogether, Need: 24, Have: 16}
	budget := &Unfit{Kind: UnfitSearchBudget, Need: 24, Have: 32}
	tests := []struct {
		name  string
		unfit map[string]*Unfit
		want  string
	}{{
		name:  "all fit",
		unfit: map[string]*Unfit{"a": nil, "b": nil},
	}, {
		name:  "none fits",
		unfit: map[string]*Unfit{"a": together, "b": together},
	}, {
		name:  "the first in name order fails, a later one fits",
		unfit: map[string]*Unfit{"a": together, "b": nil},
		want:  "b found a placement, these did not: a: " + together.Message(contract.GiB),
	}, {
		name:  "a later one fails",
		unfit: map[string]*Unfit{"a": nil, "b": together, "c": nil},
		want:  "a, c found a placement, these did not: b: " + together.Message(contract.GiB),
	}, {
		name:  "a search out of budget is no disagreement",
		unfit: map[string]*Unfit{"a": budget, "b": nil},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fitDisagreement(tt.unfit); got != tt.want {
				t.Errorf("fitDisagreement = %q, want %q", got, tt.want)
			}
		})
	}
}

func check(t *testing.T, n *Node, r *Request, a contract.Allocation) {
	t.Helper()
	after := n.Clone()
	for _, c := range r.Containers {
		cards := a[c.Index]
		if len(cards) != c.Cards() {
			t.Fatalf("container %d got %d cards, wants %d", c.Index, len(cards), c.Cards())
		}
		for idx, u := range cards {
			card := after.Card(idx)
			if card == nil || !card.Healthy || !contract.ModelAllowed(r.Models, card.Model) {
				t.Fatalf("card %d is missing, unhealthy or not allowed", idx)
			}
			if c.Whole() {
				if card.Used != 0 || u != card.Total {
					t.Fatalf("whole card %d was in use or sized %d", idx, u)
				}
			} else if u != c.PerCard() {
				t.Fatalf("card %d got %d, wants %d", idx, u, c.PerCard())
			}
			card.Used += u
			if card.Used > card.Total {
				t.Fatalf("card %d over-committed", idx)
			}
		}
	}
}
