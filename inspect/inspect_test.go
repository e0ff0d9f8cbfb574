package inspect

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	restclient "k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// cluster is a pool of three GPU nodes and one without GPUs:
//
//	a100-0  gpupack, 2 x A100 80 GiB, card 1 unhealthy
//	mixed-0 gpupack, A100 80 GiB + T4 (15,360 MiB = 15 GiB)
//	old-0   gpushare's device plugin: 30 GiB over 2 cards, no inventory
//	cpu-0   no GPU
func cluster() []runtime.Object {
	old := fixture.MakeNode("old-0").Legacy(30, 2)
	old.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "old-0"}, {Type: corev1.NodeInternalIP, Address: "10.0.0.3"}}
	mixed := fixture.MakeNode("mixed-0").Cards("NVIDIA A100-SXM4-80GB", fixture.GiB(80)).Cards("Tesla T4", 15360)
	mixed.Status.Addresses[0].Address = "10.0.0.2"
	return []runtime.Object{
		fixture.MakeNode("a100-0").Cards("NVIDIA A100-SXM4-80GB", fixture.GiB(80), fixture.GiB(80)).Unhealthy(1).Obj(),
		mixed.Obj(), old.Obj(), fixture.MakeNode("cpu-0").Obj(),
		// a100-0: 8 on card 0; 10 + 10 on cards 0 and 1 (one container).
		fixture.MakePod().Name("one").Namespace("team-a").Node("a100-0").Phase(corev1.PodRunning).GPUMem(8).
			Annotation(contract.AnnotationAllocation, `{"0":{"0":8}}`).Obj(),
		fixture.MakePod().Name("two-cards").Namespace("team-a").Node("a100-0").Phase(corev1.PodRunning).Container("20", "2", "").
			Annotation(contract.AnnotationAllocation, `{"0":{"0":10,"1":10}}`).Obj(),
		// ended or not bound: hold nothing.
		fixture.MakePod().Name("done").Namespace("team-a").Node("a100-0").Phase(corev1.PodSucceeded).GPUMem(40).
			Annotation(contract.AnnotationAllocation, `{"0":{"0":40}}`).Obj(),
		fixture.MakePod().Name("waiting").Namespace("team-a").Phase(corev1.PodPending).GPUMem(4).Obj(),
		// a pod without GPU.
		fixture.MakePod().Name("web").Namespace("team-a").Node("a100-0").Phase(corev1.PodRunning).Container("", "", "1").Obj(),
		// mixed-0: two containers on the T4; a whole A100.
		fixture.MakePod().Name("pair").Namespace("team-b").Node("mixed-0").Phase(corev1.PodRunning).GPUMem(5).GPUMem(3).
			Annotation(contract.AnnotationAllocation, `{"0":{"1":5},"1":{"1":3}}`).Obj(),
		fixture.MakePod().Name("whole").Namespace("team-b").Node("mixed-0").Phase(corev1.PodRunning).Container("", "1", "").
			Annotation(contract.AnnotationAllocation, `{"0":{"0":80}}`).Obj(),
		// old-0: gpushare's extender wrote only the index; one pod not
		// assigned a card yet.
		fixture.MakePod().Name("legacy").Namespace("team-c").Node("old-0").Phase(corev1.PodRunning).GPUMem(7).
			Annotation(contract.AnnotationIndex, "1").Obj(),
		fixture.MakePod().Name("unassigned").Namespace("team-c").Node("old-0").Phase(corev1.PodPending).GPUMem(3).Obj(),
	}
}

// fakeLive is a LiveSource of fixed values; nodes it does not know fail.
type fakeLive map[string]map[int]Live

var _ LiveSource = fakeLive(nil)

func (f fakeLive) Live(_ context.Context, node string) (map[int]Live, error) {
	if l, ok := f[node]; ok {
		return l, nil
	}
	return nil, ErrNoDevicePlugin
}

func TestInspect(t *testing.T) {
	live := fakeLive{"a100-0": {0: {Utilization: 0.375, UsedBytes: 6 << 30}}}
	tests := []struct {
		name    string
		opts    Options
		details bool
		want    string
	}{{
		// a100-0: card 0 8+10 = 18/80, card 1 10/80, node 28/160
		// mixed-0: card 0 80/80 (whole), card 1 5+3 = 8/15, node 88/95
		// old-0: 30/2 = 15 per card; card 1 7/15, pending 3; node 10/30
		// cluster: 28+88+10 = 126 of 160+95+30 = 285 -> 44%
		name: "summary",
		want: `
NAME     IPADDRESS  GPU0(Allocated/Total)  GPU1(Allocated/Total)  PENDING(Allocated)  GPU Memory(GiB)
a100-0   10.0.0.1   18/80                  10/80                  0                   28/160
mixed-0  10.0.0.2   80/80                  8/15                   0                   88/95
old-0    10.0.0.3   0/15                   7/15                   3                   10/30
--------------------------------------------------------------------------------
Allocated/Total GPU Memory In Cluster:
126/285 (44%)
`,
	}, {
		// one node: 28/160 -> 17%
		name: "one node",
		opts: Options{Node: "a100-0"},
		want: `
NAME    IPADDRESS  GPU0(Allocated/Total)  GPU1(Allocated/Total)  GPU Memory(GiB)
a100-0  10.0.0.1   18/80                  10/80                  28/160
--------------------------------------------------------------------------------
Allocated/Total GPU Memory In Cluster:
28/160 (17%)
`,
	}, {
		// a node without GPUs asked for by name: shown, empty.
		name: "node without GPU",
		opts: Options{Node: "cpu-0"},
		want: `
NAME   IPADDRESS  GPU Memory(GiB)
cpu-0  10.0.0.1   0/0
--------------------------------------------------------------------------------
Allocated/Total GPU Memory In Cluster:
0/0 (0%)
`,
	}, {
		// live state where the device plugin serves it (card 0 of a100-0:
		// 6 GiB used, 37.5% busy rounds to 38%); gpushare's node has no
		// model or health.
		name: "details", details: true,
		want: `
NAME:       a100-0
IPADDRESS:  10.0.0.1

GPU  MODEL                  HEALTH     ALLOCATED/TOTAL  USED(GiB)  UTIL
0    NVIDIA A100-SXM4-80GB  Healthy    18/80            6.0        38%
1    NVIDIA A100-SXM4-80GB  Unhealthy  10/80            -          -

NAME       NAMESPACE  GPU0(Allocated)  GPU1(Allocated)
one        team-a     8                0
two-cards  team-a     10               10
Allocated:  28 (17%)
Total:      160
--------------------------------------------------------------------------------
NAME:       mixed-0
IPADDRESS:  10.0.0.2

GPU  MODEL                  HEALTH   ALLOCATED/TOTAL  USED(GiB)  UTIL
0    NVIDIA A100-SXM4-80GB  Healthy  80/80            -          -
1    Tesla T4               Healthy  8/15             -          -

NAME   NAMESPACE  GPU0(Allocated)  GPU1(Allocated)
pair   team-b     0                8
whole  team-b     80               0
Allocated:  88 (92%)
Total:      95
--------------------------------------------------------------------------------
NAME:       old-0
IPADDRESS:  10.0.0.3

GPU  MODEL  HEALTH  ALLOCATED/TOTAL  USED(GiB)  UTIL
0    -      -       0/15             -          -
1    -      -       7/15             -          -

NAME        NAMESPACE  GPU0(Allocated)  GPU1(Allocated)  PENDING(Allocated)
legacy      team-c     0                7                0
unassigned  team-c     0                0                3
Allocated:  10 (33%)
Total:      30
--------------------------------------------------------------------------------
Allocated/Total GPU Memory In Cluster:
126/285 (44%)
`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c, err := Collect(ctx, fake.NewClientset(cluster()...), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if tc.details {
				errs := c.AddLive(ctx, live)
				if len(errs) != 2 { // mixed-0 and old-0 serve no metrics
					t.Errorf("live errors %v, want 2", errs)
				}
				err = WriteDetails(&out, c)
			} else {
				err = WriteSummary(&out, c)
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(strings.TrimPrefix(tc.want, "\n"), out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCollectNodeNotFound(t *testing.T) {
	_, err := Collect(context.Background(), fake.NewClientset(cluster()...), Options{Node: "nope"})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("error %v, want ErrNotFound", err)
	}
}

func TestInferUnit(t *testing.T) {
	tests := []struct {
		name string
		mem  int64 // allocatable gpu-mem of a node with one 16 GiB card
		want contract.Unit
	}{
		{"GiB devices", 16, contract.GiB},
		{"MiB devices", 16384, contract.MiB},
		// an unhealthy card's devices leave allocatable: still MiB
		{"MiB, part unhealthy", 8192, contract.MiB},
		{"no allocatable yet", 0, contract.GiB},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := fixture.MakeNode("n").Cards("Tesla V100", fixture.GiB(16))
			if tc.mem > 0 {
				n.Status.Allocatable[contract.ResourceGPUMem] = *resource.NewQuantity(tc.mem, resource.DecimalSI)
			}
			if got := inferUnit([]corev1.Node{*n.Obj()}); got != tc.want {
				t.Errorf("unit %s, want %s", got, tc.want)
			}
		})
	}
}

const exposition = `# HELP gpupack_device_plugin_card_utilization_ratio Share of the last sample period in which the card's SMs were busy, 0..1.
# TYPE gpupack_device_plugin_card_utilization_ratio gauge
gpupack_device_plugin_card_utilization_ratio{index="0",model="NVIDIA A100-SXM4-80GB",node="a100-0",uuid="GPU-a"} 0.5
gpupack_device_plugin_card_utilization_ratio{index="1",model="Odd \"model\", really",node="a100-0",uuid="GPU-b"} 0.25
gpupack_device_plugin_card_utilization_ratio{index="2",model="x",node="a100-0",uuid="GPU-c"} 0
gpupack_device_plugin_card_memory_used_bytes{index="0",model="NVIDIA A100-SXM4-80GB",node="a100-0",uuid="GPU-a"} 4.294967296e+09
gpupack_device_plugin_card_memory_used_bytes{index="1",model="Odd \"model\", really",node="a100-0",uuid="GPU-b"} 1024
gpupack_device_plugin_card_sample_ok{index="0",model="NVIDIA A100-SXM4-80GB",node="a100-0",uuid="GPU-a"} 1
gpupack_device_plugin_card_sample_ok{index="2",model="x",node="a100-0",uuid="GPU-c"} 0
gpupack_device_plugin_pod_memory_used_bytes{container="c0",namespace="ns",node="a100-0",pod="p",uuid="GPU-a"} 1e+09
gpupack_device_plugin_allocations_total{result="allocated"} 3
`

func TestParseMetrics(t *testing.T) {
	got, err := ParseMetrics([]byte(exposition))
	if err != nil {
		t.Fatal(err)
	}
	// card 2 failed its sample: left out.
	want := map[int]Live{0: {Utilization: 0.5, UsedBytes: 4 << 30}, 1: {Utilization: 0.25, UsedBytes: 1024}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("live (-want +got):\n%s", diff)
	}
	if _, err := ParseMetrics([]byte(`gpupack_device_plugin_card_utilization_ratio{index="0"} abc`)); err == nil {
		t.Error("a value that is not a number was accepted")
	}
}

// response is a proxied response of the fake clientset.
type response struct{ body string }

func (r response) DoRaw(context.Context) ([]byte, error) { return []byte(r.body), nil }
func (r response) Stream(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(r.body)), nil
}

var _ restclient.ResponseWrapper = response{}

func TestPluginMetrics(t *testing.T) {
	plugin := func(name, node string, phase corev1.PodPhase, port int32) *corev1.Pod {
		p := fixture.MakePod().Name(name).Namespace("kube-system").Node(node).Phase(phase).Container("", "", "").Obj()
		p.Labels = map[string]string{"app.kubernetes.io/name": "gpupack-device-plugin"}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: port}}
		return p
	}
	cs := fake.NewClientset(plugin("dp-a", "a100-0", corev1.PodRunning, 9999), plugin("dp-b", "t4-0", corev1.PodPending, 9445))
	var asked []string
	cs.AddProxyReactor("pods", func(a k8stesting.Action) (bool, restclient.ResponseWrapper, error) {
		p := a.(k8stesting.ProxyGetAction)
		asked = append(asked, p.GetNamespace()+"/"+p.GetName()+":"+p.GetPort()+"/"+p.GetPath())
		return true, response{exposition}, nil
	})
	m := &PluginMetrics{Client: cs}
	got, err := m.Live(context.Background(), "a100-0")
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Utilization != 0.5 || len(asked) != 1 || asked[0] != "kube-system/dp-a:9999/metrics" {
		t.Errorf("live %v after asking %v; want card 0 at 50%% from kube-system/dp-a:9999/metrics", got, asked)
	}
	// the plugin of t4-0 is not running; cpu-0 has none.
	for _, node := range []string{"t4-0", "cpu-0"} {
		if _, err := m.Live(context.Background(), node); !errors.Is(err, ErrNoDevicePlugin) {
			t.Errorf("%s: error %v, want ErrNoDevicePlugin", node, err)
		}
	}
}

// TestCardsAsTheExtenderReadsThem pins what a node of gpushare's device
// plugin that publishes aliyun.com/gpu-mem (16) but no aliyun.com/gpu-count
// shows: no card, as the extender counts it (contract.CardsOf), and the
// problem; a pod bound there holds its memory as pending.
func TestCardsAsTheExtenderReadsThem(t *testing.T) {
	noCount := fixture.MakeNode("nocount-0").Legacy(16, 1).Obj()
	delete(noCount.Status.Allocatable, contract.ResourceGPUCount)
	const problem = "allocatable aliyun.com/gpu-mem without aliyun.com/gpu-count: the number of cards is unknown"
	pod := fixture.MakePod().Name("legacy").Namespace("team-c").Node("nocount-0").Phase(corev1.PodRunning).GPUMem(6).
		Annotation(contract.AnnotationIndex, "0").Obj()
	tests := []struct {
		name string
		objs []runtime.Object
		opts Options
		want []Node
	}{
		{"no pod: not a GPU node", []runtime.Object{noCount}, Options{}, nil},
		{"asked for by name", []runtime.Object{noCount}, Options{Node: "nocount-0"},
			[]Node{{Name: "nocount-0", Address: "10.0.0.1", Problem: problem}}},
		{"a pod bound there: shown, its 6 pending", []runtime.Object{noCount, pod}, Options{},
			[]Node{{Name: "nocount-0", Address: "10.0.0.1", Problem: problem, Pending: []PodShare{{Namespace: "team-c", Name: "legacy", Units: 6}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Collect(context.Background(), fake.NewClientset(tc.objs...), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.Nodes, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("nodes (-want +got):\n%s", diff)
			}
			var out bytes.Buffer
			if err := WriteDetails(&out, c); err != nil {
				t.Fatal(err)
			}
			if len(c.Nodes) > 0 && !strings.Contains(out.String(), "\nPROBLEM:    "+problem+"\n") {
				t.Errorf("details do not say the problem:\n%s", out.String())
			}
		})
	}
}
