package policy

import (
	"testing"

	"github.com/gpupack/gpupack/contract"
)

func TestLearnerRebuildsAsPodsGrow(t *testing.T) {
	l := NewLearner(nil, 0.95)
	if w, fresh := l.Fresh(); w != nil || !fresh {
		t.Fatalf("before any pod: %v %v, want nil and fresh", w, fresh)
	}
	r := &Request{Containers: []contract.ContainerRequest{{Mem: 4, Count: 1}}}
	for range 100 {
		l.Observe(r)
	}
	if _, fresh := l.Fresh(); fresh {
		t.Fatal("100 pods seen and no estimate built: not fresh")
	}
	w := l.Workload()
	if got, fresh := l.Fresh(); got != w || !fresh {
		t.Fatal("the estimate just built is not the fresh one")
	}
	// It is rebuilt once the pods seen grew by 5%: 100 -> 105.
	for i := range 5 {
		if _, fresh := l.Fresh(); !fresh {
			t.Fatalf("stale after %d more pods, want fresh until 5", i)
		}
		l.Observe(r)
	}
	if _, fresh := l.Fresh(); fresh {
		t.Fatal("fresh after 5% more pods")
	}
	if l.Workload() == w {
		t.Error("not rebuilt after 5% more pods")
	}
}
