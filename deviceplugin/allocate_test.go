package deviceplugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// describePlans writes plans as "<pod>:<card>" (plans of 4 units on one
// card), sorted.
func describePlans(plans []plan) string {
	var out []string
	for _, pl := range plans {
		for c := range pl.cards {
			out = append(out, fmt.Sprintf("%s:%d", pl.pod.Name, c))
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestWaitingPlans(t *testing.T) {
	// Pods a, b, c, d, e of one 4-unit container each, planned on cards 0,
	// 1, 2, 3 and 1 again, bound in that order (uids "uid-<name>"); held
	// says what the kubelet gave. The rules are waitingPlans'.
	var pods []*corev1.Pod
	for i, card := range []int{0, 1, 2, 3, 1} {
		name := string(rune('a' + i))
		pods = append(pods, bound(name, fmt.Sprintf(`{"0":{"%d":4}}`, card), fmt.Sprint(i), fixture.MakePod().GPUMem(4)))
	}
	on := func(card int) map[int]map[int]int64 { return map[int]map[int]int64{0: {card: 4}} }
	tests := []struct {
		name    string
		held    held
		want    string // what waits: pod the plan was made for:card
		drifted string // pods that drifted
	}{
		{"nothing held: every plan waits", held{}, "a:0 b:1 c:2 d:3 e:1", ""},
		{"rule 1: each holds its own plan", held{"uid-a": on(0), "uid-c": on(2)}, "b:1 d:3 e:1", ""},
		// a holds card 1 and b card 0. Were rule 3 first, a would take
		// e's plan (b holds) and b, finding none, would drift.
		{"rule 2, before rule 3: a and b swapped plans", held{"uid-a": on(1), "uid-b": on(0)}, "c:2 d:3 e:1", ""},
		{"rule 2: a chain of three swapped plans", held{"uid-a": on(1), "uid-b": on(2), "uid-c": on(0)}, "d:3 e:1", ""},
		// b and e, both planned on card 1, hold nothing: a takes the
		// older, b's; e still waits for card 1, and a's plan for card 0.
		{"rule 3: a served from the oldest equal plan", held{"uid-a": on(1)}, "a:0 c:2 d:3 e:1", ""},
		{"rule 3: b holds its own plan, a took e's", held{"uid-a": on(1), "uid-b": on(1)}, "a:0 c:2 d:3", ""},
		{"rule 4: cards no plan names", held{"uid-a": on(7)}, "b:1 c:2 d:3 e:1", "uid-a"},
		{"rule 4: fewer units than any plan", held{"uid-a": {0: {1: 2}}}, "b:1 c:2 d:3 e:1", "uid-a"},
		// b and e hold their own plans: none is left for a.
		{"rule 4: three hold the cards of two plans", held{"uid-a": on(1), "uid-b": on(1), "uid-e": on(1)}, "c:2 d:3", "uid-a"},
		// Container 1 of a has no plan: nothing is taken off for it.
		{"rule 4: a container without a plan", held{"uid-a": {1: {7: 4}}}, "a:0 b:1 c:2 d:3 e:1", "uid-a"},
		// a and c hold card 1 and e its own: a, first by UID, takes b's
		// plan; none is left for c, whose own plan goes.
		{"holders go in order of pod UID", held{"uid-a": on(1), "uid-c": on(1), "uid-e": on(1)}, "a:0 d:3", "uid-c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			waiting, drifted := waitingPlans(plans(pods), tt.held)
			if got := describePlans(waiting); got != tt.want {
				t.Errorf("waiting %q, want %q", got, tt.want)
			}
			var d []string
			for uid := range drifted {
				d = append(d, string(uid))
			}
			sort.Strings(d)
			if got := strings.Join(d, " "); got != tt.drifted {
				t.Errorf("drifted %q, want %q", got, tt.drifted)
			}
		})
	}
}

func TestPlans(t *testing.T) {
	now := metav1.Now()
	deleting := bound("deleting", `{"0":{"0":4}}`, "1", fixture.MakePod().GPUMem(4))
	deleting.DeletionTimestamp = &now
	rewritten := bound("rewritten", `{"0":{"5":4}}`, "2", fixture.MakePod().GPUMem(4))
	rewritten.Annotations[contract.AnnotationPlanned] = `{"0":{"6":4}}`
	tests := []struct {
		name string
		pods []*corev1.Pod
		want []string // plan.String(), in order
	}{
		{"oldest bind first, then pod UID, then container", []*corev1.Pod{
			bound("late", `{"0":{"1":4}}`, "9", fixture.MakePod().GPUMem(4)),
			bound("two", `{"1":{"2":3},"0":{"2":2}}`, "3", fixture.MakePod().GPUMem(2).GPUMem(3)),
			bound("one", `{"0":{"3":4}}`, "3", fixture.MakePod().GPUMem(4)),
		}, []string{
			"default/one container 0 (card 3: 4)", "default/two container 0 (card 2: 2)",
			"default/two container 1 (card 2: 3)", "default/late container 0 (card 1: 4)",
		}},
		{"pods not in play have none", []*corev1.Pod{
			bound("ended", `{"0":{"0":4}}`, "0", fixture.MakePod().GPUMem(4).Phase(corev1.PodSucceeded)),
			bound("failed", `{"0":{"0":4}}`, "0", fixture.MakePod().GPUMem(4).Phase(corev1.PodFailed)),
			deleting,
		}, nil},
		{"a rewritten allocation: the plan is planned-allocation", []*corev1.Pod{rewritten},
			[]string{"default/rewritten container 0 (card 6: 4)"}},
		{"an allocation that does not parse", []*corev1.Pod{bound("bad", `{`, "0", fixture.MakePod().GPUMem(4))}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, pl := range plans(tt.pods) {
				got = append(got, pl.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("plans (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServedHoldings(t *testing.T) {
	// Without the kubelet's PodResources API, a container holds the plan
	// it was served from; a pod marked assigned that this plugin served
	// none of was served before a restart: all its containers hold.
	two := func(name, assigned string) *corev1.Pod {
		pod := bound(name, `{"0":{"1":2},"1":{"2":3}}`, "0", fixture.MakePod().GPUMem(2).GPUMem(3))
		pod.Annotations[contract.AnnotationAssigned] = assigned
		return pod
	}
	both := map[int]map[int]int64{0: {1: 2}, 1: {2: 3}}
	ended := two("ended", "true")
	ended.Status.Phase = corev1.PodSucceeded
	tests := []struct {
		name   string
		pod    *corev1.Pod
		served []int // containers served
		want   held
	}{
		{"nothing served", two("p", "false"), nil, held{}},
		{"one container served", two("p", "false"), []int{1}, held{"uid-p": {1: {2: 3}}}},
		{"both served", two("p", "false"), []int{0, 1}, held{"uid-p": both}},
		{"assigned before a restart", two("p", "true"), nil, held{"uid-p": both}},
		{"assigned, and one served since", two("p", "true"), []int{0}, held{"uid-p": {0: {1: 2}}}},
		{"not in play", ended, nil, held{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServedHoldings(nil)
			for _, pl := range plans([]*corev1.Pod{tt.pod}) {
				for _, ctr := range tt.served {
					if pl.container == ctr {
						s.served(context.Background(), pl)
					}
				}
			}
			got, err := s.list(context.Background(), []*corev1.Pod{tt.pod})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("held (-want +got):\n%s", diff)
			}
		})
	}
}
