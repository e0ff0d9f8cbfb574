package extender

import (
	"encoding/json"
	"net/http"
	"testing"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/internal/fixture"
)

// fuzzSeeds are valid and broken requests to start from.
func fuzzSeeds(f *testing.F) {
	pod := fixture.MakePod().Name("a").GPUMem(4).Container("8", "2", "").Obj()
	good, _ := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: names("n1", "n2", "n4", "ghost")})
	f.Add(good)
	f.Add([]byte(`{"pod":{"metadata":{"name":"x","uid":"u"},"spec":{"containers":[{"name":"c","resources":{"limits":{"aliyun.com/gpu-mem":"-3","aliyun.com/gpu-count":"1e3"}}}]}},"nodenames":["n1"]}`))
	f.Add([]byte(`{"pod":{"metadata":{"name":"x","uid":"u","annotations":{"gpupack.io/gpu-models":"||,"}},"spec":{"containers":[{"name":"c","resources":{"limits":{"aliyun.com/gpu-count":"64"}}}]}},"nodes":{"items":[{"metadata":{"name":"n2"}}]}}`))
	f.Add([]byte(`{"podName":"a","podNamespace":"default","podUID":"uid-a","node":"n2"}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`null`))
}

// FuzzHandlers sends arbitrary bodies to every verb: the extender answers
// 200 or 400, never crashes, and never over-commits a card.
func FuzzHandlers(f *testing.F) {
	fuzzSeeds(f)
	e := newEnv(f, "fgd", cluster()...)
	e.create(fixture.MakePod().Name("a").GPUMem(4).Obj())
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{filterPath, prioritizePath, bindPath} {
			code := httptestRecorder(e.srv.Handler(), http.MethodPost, path, string(body))
			if code != http.StatusOK && code != http.StatusBadRequest {
				t.Fatalf("%s answered %d", path, code)
			}
		}
		for _, n := range e.cache.Inspect("") {
			for _, c := range n.Cards {
				if c.Allocated > c.Total {
					t.Fatalf("%s card %d over-committed: %d > %d", n.Name, c.Index, c.Allocated, c.Total)
				}
			}
		}
	})
}
