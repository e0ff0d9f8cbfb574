package extender

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/extender/cache"
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

// FuzzFilterAnswerJSON checks that filter's answer is written exactly as
// json.Encoder writes its ExtenderFilterResult, whatever its names (a name
// may come twice) and reasons. names and reasons are lists separated by
// 0x1e; the node at position i fails when bit i%8 of fails is set, with
// reason i%len(reasons), unresolvable when bit 2+i%6 of mode is set;
// mode's bits 0 and 1 choose which other parts are set.
func FuzzFilterAnswerJSON(f *testing.F) {
	f.Add("n1\x1en2\x1e<n&1>\x1enode-0001", "gpupack: largest free card has 6 GiB, container \"c0\" needs 8 GiB\x1eé\u2028\x1e\xff", uint8(0xff), uint8(3))
	f.Add("", "", uint8(0), uint8(0))
	// a name at several positions, failing both ways
	f.Add("a\x1eb\x1ea\x1ea\x1eb\x1ea", "x\x1ey\x1ez", uint8(0x3f), uint8(0x0e))
	// names that share long prefixes, end inside them, and hold zeros
	f.Add("gpu-node-0001.example.com\x1egpu-node-0001\x1egpu-node-0001.example.co\x1egpu-node-0001\x00\x1egpu-node-0001\x00\x00x\x1egpu-node-0002", "r", uint8(0xff), uint8(0))
	// Each byte encoding/json escapes, alone in a name and in a reason.
	for _, c := range []string{"<", ">", "&", `"`, `\\`, "\t", "\x7f", "é", "\u2028", "\xff"} {
		f.Add("a"+c+"b\x1en", "r"+c, uint8(0xff), uint8(3))
	}
	f.Fuzz(func(t *testing.T, names, reasons string, fails, mode uint8) {
		ns, texts := strings.Split(names, "\x1e"), strings.Split(reasons, "\x1e")
		rs := make([]*miss, len(texts))
		for i, text := range texts {
			rs[i] = newMiss(nil, text)
		}
		a := &filterAnswer{res: &extenderv1.ExtenderFilterResult{Error: texts[len(texts)-1]}, names: ns}
		if mode&1 != 0 {
			a.res.NodeNames = &ns
		}
		if mode&2 != 0 {
			a.res.Nodes = &corev1.NodeList{Items: []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: ns[0]}}}}
		}
		for i := range ns {
			if fails&(1<<(i%8)) != 0 {
				a.failed = append(a.failed, i)
			}
		}
		a.why = func(i int) (*miss, bool) { return rs[i%len(rs)], mode&(4<<(i%6)) != 0 }
		var want, got bytes.Buffer
		if err := json.NewEncoder(&want).Encode(a.result()); err != nil {
			t.Fatal(err)
		}
		if err := writeFilterAnswer(&got, a); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("written:\n%q\nencoding/json:\n%q", got.Bytes(), want.Bytes())
		}
	})
}

// FuzzExtenderArgsJSON checks that filter and prioritize read a request as
// encoding/json reads an ExtenderArgs: an error for the same bodies, else
// the same pod, nodes and node names (none, empty or the same list), the
// names of nodes the cache knows included.
func FuzzExtenderArgsJSON(f *testing.F) {
	fuzzSeeds(f)
	for _, body := range []string{
		`{"NodeNames":["n1", "n2" ,"ghost"]}`,
		`{"NodeNames":[]}`, `{"NodeNames":null}`, `{"Pod":null}`, `{}`,
		`{"NodeNames":["n1"],"nodenames":["n2"]}`, `{"NodeNames":null,"NodeNames":["n1"]}`, `{"NodeNames":["n1"],"NodeNames":null}`,
		// Each byte the fast path leaves to encoding/json, alone.
		`{"NodeNames":["n\u0031"]}`, `{"NodeNames":["n\\2"]}`, `{"NodeNames":["é"]}`, "{\"NodeNames\":[\"\x7f\"]}", "{\"NodeNames\":[\"\xff\"]}",
		`{"NodeNames":["n1",""]}`, `{"NodeNames":["n1",null,"n2"]}`, `{"NodeNames":["n1",2]}`,
		`{"NodeNames":"n1"}`, `{"NodeNames":{"n1":1}}`, "{\"NodeNames\":[\t\"n1\"\r\n,\"n2\" ] }",
	} {
		f.Add([]byte(body))
	}
	c := cache.New(cache.Options{Unit: "GiB", SigningKey: testKey})
	for _, n := range []string{"n1", "n2", "node-0001"} {
		c.SetNode(fixture.MakeNode(n).Cards("Tesla T4", 16<<10).Obj())
	}
	s := &Server{cache: c}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want extenderv1.ExtenderArgs
		wantErr := decode(httptest.NewRequest(http.MethodPost, filterPath, bytes.NewReader(body)), &want)
		got, err := s.decodeArgs(httptest.NewRequest(http.MethodPost, filterPath, bytes.NewReader(body)))
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("error %v, encoding/json's %v", err, wantErr)
		}
		if err != nil {
			return
		}
		if (got.NodeNames == nil) != (want.NodeNames == nil) ||
			got.NodeNames != nil && ((*got.NodeNames == nil) != (*want.NodeNames == nil) || !slices.Equal(*got.NodeNames, *want.NodeNames)) {
			t.Fatalf("names %#v, encoding/json's %#v", got.NodeNames, want.NodeNames)
		}
		if !equality.Semantic.DeepEqual(got.Pod, want.Pod) || !equality.Semantic.DeepEqual(got.Nodes, want.Nodes) {
			t.Fatalf("pod or nodes differ:\n%#v\n%#v", got, &want)
		}
	})
}
