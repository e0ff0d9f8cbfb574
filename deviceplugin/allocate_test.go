package deviceplugin

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/gpupack/gpupack/internal/fixture"
)

func TestPool(t *testing.T) {
	// Pods a, b, c, d of one 4-unit container each, planned on cards 0, 1,
	// 2, 3 (bound in that order); held says what the kubelet gave.
	pods := []*corev1.Pod{}
	for i, name := range []string{"a", "b", "c", "d"} {
		pods = append(pods, bound(name, fmt.Sprintf(`{"0":{"%d":4}}`, i), fmt.Sprint(i), fixture.MakePod().GPUMem(4))) // uid "uid-<name>"
	}
	on := func(card int) map[int]map[int]int64 { return map[int]map[int]int64{0: {card: 4}} }
	tests := []struct {
		name    string
		held    held
		want    string // what waits: plan owner:card
		drifted string // pods holding cards no plan names
	}{
		{"nothing held", held{}, "a:0 b:1 c:2 d:3", ""},
		{"each on its own cards", held{"uid-a": on(0), "uid-c": on(2)}, "b:1 d:3", ""},
		{"a served from b's plan; b waits for a's cards", held{"uid-a": on(1)}, "a:0 c:2 d:3", ""},
		{"a and b swapped, both hold", held{"uid-a": on(1), "uid-b": on(0)}, "c:2 d:3", ""},
		{"a chain of three", held{"uid-a": on(1), "uid-b": on(2), "uid-c": on(0)}, "d:3", ""},
		{"the kubelet gave a cards no plan names", held{"uid-a": on(7)}, "b:1 c:2 d:3", "uid-a"},
		// a and b both hold card 1: b holds its own plan, so a holds what
		// no plan left names.
		{"two hold the cards of one plan", held{"uid-a": on(1), "uid-b": on(1)}, "c:2 d:3", "uid-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, drifted := pool(plans(pods), tt.held)
			var got []string
			for _, w := range rest {
				for c := range w.cards {
					got = append(got, fmt.Sprintf("%s:%d", w.pod.Name, c))
				}
			}
			sort.Strings(got)
			if strings.Join(got, " ") != tt.want {
				t.Errorf("waiting %v, want %s", got, tt.want)
			}
			var d []string
			for uid := range drifted {
				d = append(d, string(uid))
			}
			sort.Strings(d)
			if strings.Join(d, " ") != tt.drifted {
				t.Errorf("drifted %v, want %q", d, tt.drifted)
			}
		})
	}
}
