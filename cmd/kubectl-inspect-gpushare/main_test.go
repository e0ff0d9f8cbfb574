package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/inspect"
	"github.com/gpupack/gpupack/internal/fixture"
)

// The flags users know from gpushare's plugin and from kubectl.
func TestFlags(t *testing.T) {
	cmd := newCommand(&bytes.Buffer{}, &bytes.Buffer{})
	for _, name := range []string{"details", "kubeconfig", "context", "cluster", "user", "namespace", "server", "token", "request-timeout", "memory-unit", "live"} {
		if cmd.Flags().Lookup(name) == nil {
			t.Errorf("no --%s", name)
		}
	}
	if f := cmd.Flags().ShorthandLookup("d"); f == nil || f.Name != "details" {
		t.Errorf("-d is %v, want --details", f)
	}
}

func TestRun(t *testing.T) {
	cs := fake.NewClientset(
		fixture.MakeNode("n0").Cards("Tesla T4", 15360).Obj(),
		fixture.MakePod().Name("p").Node("n0").GPUMem(5).Annotation(contract.AnnotationAllocation, `{"0":{"0":5}}`).Obj(),
	)
	tests := []struct {
		details bool
		want    []string
	}{
		{false, []string{"GPU0(Allocated/Total)", "5/15", "5/15 (33%)"}},
		// no device plugin pod: no live state, and no warning for it
		{true, []string{"Tesla T4", "Healthy", "GPU0(Allocated)", "Allocated:  5 (33%)"}},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), cs, inspect.Options{}, tc.details, true, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("details=%v: output lacks %q:\n%s", tc.details, w, out.String())
			}
		}
		if errOut.Len() > 0 {
			t.Errorf("details=%v: stderr %q", tc.details, errOut.String())
		}
	}
}
