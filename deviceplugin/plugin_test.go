package deviceplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/nvml"
)

// pods is a PodSource: cached lags, live is the API server.
type pods struct {
	mu           sync.Mutex
	cached, live []*corev1.Pod
}

func (p *pods) Cached() ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cached, nil
}
func (p *pods) Live(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live, nil
}

// testKubelet is the kubelet's registration service on kubelet.sock.
type testKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	registered chan *pluginapi.RegisterRequest
}

func (k *testKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.registered <- r
	return &pluginapi.Empty{}, nil
}

// bound returns a pod bound to the node with the extender's decision.
func bound(name, alloc string, assumed string, w *fixture.PodWrapper) *corev1.Pod {
	return w.Name(name).Node("node-a").Annotation(contract.AnnotationAllocation, alloc).
		Annotation(contract.AnnotationAssumeTime, assumed).Annotation(contract.AnnotationAssigned, "false").Obj()
}

type harness struct {
	t      *testing.T
	ctx    context.Context
	store  *mock.Store
	plugin *Plugin
	client pluginapi.DevicePluginClient
	pods   *pods
	kube   *fake.Clientset
	uuids  []string
	dir    string
}

func newHarness(t *testing.T, preset string, podList ...*corev1.Pod) *harness {
	return newHarnessWith(t, preset, nil, podList...)
}

// newHarnessWith lets the test change the plugin's options.
func newHarnessWith(t *testing.T, preset string, mod func(*Options), podList ...*corev1.Pod) *harness {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := socketDir(t)
	st, lib := mockNVML(t, dir, preset)
	var err error
	h := &harness{t: t, ctx: ctx, store: st, pods: &pods{cached: podList, live: podList}, dir: dir}
	objs := []runtimeObject{fixture.MakeNode("node-a").Obj()}
	for _, p := range podList {
		objs = append(objs, p)
	}
	h.kube = fake.NewClientset(objs...)
	opts := Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB, Health: nvml.HealthOptions{Poll: 20 * time.Millisecond, Quiet: 200 * time.Millisecond}}
	if mod != nil {
		mod(&opts)
	}
	h.plugin, err = New(opts, lib, h.pods, h.kube)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.plugin.close) // the plugin is served here, not Run
	for _, c := range h.plugin.Inventory().Cards {
		h.uuids = append(h.uuids, c.UUID)
	}

	// The kubelet's registration socket, then the plugin, as at start-up.
	ksrv, registered := startKubelet(t, dir)
	served := make(chan error, 1)
	go func() { served <- h.plugin.Serve(ctx) }()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		_ = h.plugin.WatchHealth(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		<-watched
		ksrv.Stop()
	})
	// The socket's file appears at bind, before listen: wait until it
	// accepts, or the first call may be refused.
	waitFor(t, func() bool {
		c, err := net.Dial("unix", filepath.Join(dir, SocketName))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err := h.plugin.Register(ctx); err != nil {
		t.Fatal(err)
	}
	reg := registration(t, registered)
	if reg.ResourceName != "aliyun.com/gpu-mem" || reg.Endpoint != SocketName || reg.Version != "v1beta1" || !reg.Options.GetPreferredAllocationAvailable {
		t.Fatalf("registration %+v", reg)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, reg.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.client = pluginapi.NewDevicePluginClient(conn)
	return h
}

// socketDir is a short temporary folder: unix socket paths are limited.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// mockNVML simulates a node of the preset with its state file in dir.
func mockNVML(t *testing.T, dir, preset string) (*mock.Store, nvml.Interface) {
	t.Helper()
	s, err := mock.NewState(mock.Config{Node: "node-a", Preset: preset})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mock.Create(filepath.Join(dir, "nvml.json"), s)
	if err != nil {
		t.Fatal(err)
	}
	lib, err := nvml.New(mock.New(st))
	if err != nil {
		t.Fatal(err)
	}
	return st, lib
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ids are n fake devices of card c.
func (h *harness) ids(c int, n int64) []string {
	var out []string
	for j := range n {
		out = append(out, deviceID(h.uuids[c], j))
	}
	return out
}

func TestListAndWatchSizesEachCardAndFollowsHealth(t *testing.T) {
	h := newHarness(t, "mixed")
	stream, err := h.client.ListAndWatch(h.ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	count := func(r *pluginapi.ListAndWatchResponse) map[string][2]int { // uuid -> healthy, unhealthy
		out := map[string][2]int{}
		for _, d := range r.Devices {
			uuid, _, err := parseID(d.ID)
			if err != nil {
				t.Fatal(err)
			}
			c := out[uuid]
			if d.Health == pluginapi.Healthy {
				c[0]++
			} else {
				c[1]++
			}
			out[uuid] = c
		}
		return out
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// 2 x A100 80 GiB, 2 x T4 15 GiB (15,360 MiB).
	want := map[string][2]int{h.uuids[0]: {80, 0}, h.uuids[1]: {80, 0}, h.uuids[2]: {15, 0}, h.uuids[3]: {15, 0}}
	if diff := cmp.Diff(want, count(first)); diff != "" {
		t.Fatalf("devices (-want +got):\n%s", diff)
	}
	if err := h.store.InjectXid(2, 79); err != nil {
		t.Fatal(err)
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want[h.uuids[2]] = [2]int{0, 15}
	if diff := cmp.Diff(want, count(next)); diff != "" {
		t.Fatalf("after Xid 79 (-want +got):\n%s", diff)
	}
	if h.plugin.Inventory().Cards[2].Healthy {
		t.Error("inventory still says healthy")
	}
	again, err := stream.Recv() // recovered after the quiet period
	if err != nil {
		t.Fatal(err)
	}
	want[h.uuids[2]] = [2]int{15, 0}
	if diff := cmp.Diff(want, count(again)); diff != "" {
		t.Fatalf("after recovery (-want +got):\n%s", diff)
	}
}

func TestAllocate(t *testing.T) {
	// Two pods of the same size on different cards, bound at once; a pod
	// with two GPU containers; a pod with a share on each of two cards.
	same1 := bound("same1", `{"0":{"1":4}}`, "100", fixture.MakePod().GPUMem(4))
	same2 := bound("same2", `{"0":{"3":4}}`, "101", fixture.MakePod().GPUMem(4))
	two := bound("two", `{"0":{"0":2},"1":{"0":3}}`, "102", fixture.MakePod().GPUMem(2).GPUMem(3))
	multi := bound("multi", `{"0":{"1":5,"2":5}}`, "103", fixture.MakePod().Container("10", "2", ""))
	h := newHarness(t, "a100x8", same1, same2, two, multi)

	// The kubelet serves same2 first: the preference for size 4 is the
	// oldest waiting pod's card (card 1, same1's)...
	pref, err := h.client.GetPreferredAllocation(h.ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: append(h.ids(3, 10), h.ids(1, 10)...), AllocationSize: 4},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h.ids(1, 4), pref.ContainerResponses[0].DeviceIDs); diff != "" {
		t.Errorf("preferred (-want +got):\n%s", diff)
	}
	tests := []struct {
		name    string
		ids     []string
		wantPod string
		wantEnv map[string]string
	}{
		{"4 GiB on card 3 is same2's, whoever was bound first", h.ids(3, 4), "same2", map[string]string{
			"NVIDIA_VISIBLE_DEVICES": h.uuids[3], "ALIYUN_COM_GPU_MEM_IDX": "3", "ALIYUN_COM_GPU_MEM_POD": "4",
			"ALIYUN_COM_GPU_MEM_CONTAINER": "4", "ALIYUN_COM_GPU_MEM_DEV": "80", "GPUPACK_MEMORY_LIMIT_MIB": "4096", "GPUPACK_MEMORY_FRACTION": "0.0500"}},
		{"4 GiB on card 1 is same1's", h.ids(1, 4), "same1", map[string]string{"NVIDIA_VISIBLE_DEVICES": h.uuids[1], "ALIYUN_COM_GPU_MEM_IDX": "1"}},
		{"the second container of two", h.ids(0, 3), "two", map[string]string{"ALIYUN_COM_GPU_MEM_IDX": "0", "ALIYUN_COM_GPU_MEM_POD": "5", "ALIYUN_COM_GPU_MEM_CONTAINER": "3"}},
		{"the first container of two", h.ids(0, 2), "two", map[string]string{"ALIYUN_COM_GPU_MEM_CONTAINER": "2"}},
		{"5 GiB on each of cards 1 and 2", append(h.ids(2, 5), h.ids(1, 5)...), "multi", map[string]string{
			"NVIDIA_VISIBLE_DEVICES": h.uuids[1] + "," + h.uuids[2], "ALIYUN_COM_GPU_MEM_IDX": "1,2", "ALIYUN_COM_GPU_MEM_CONTAINER": "10", "GPUPACK_MEMORY_LIMIT_MIB": "5120"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: tt.ids}}})
			if err != nil {
				t.Fatal(err)
			}
			env := resp.ContainerResponses[0].Envs
			for k, v := range tt.wantEnv {
				if env[k] != v {
					t.Errorf("%s = %q, want %q", k, env[k], v)
				}
			}
		})
	}
	// Every container served: each pod is marked assigned.
	for _, name := range []string{"same1", "same2", "two", "multi"} {
		p, err := h.kube.CoreV1().Pods("default").Get(h.ctx, name, metav1GetOptions)
		if err != nil || p.Annotations[contract.AnnotationAssigned] != "true" {
			t.Errorf("pod %s not marked assigned: %v", name, err)
		}
	}

	t.Run("a request no pod waits for is an error naming the pods", func(t *testing.T) {
		_, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: h.ids(5, 4)}}})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no pod bound here waits for card 5: 4 GiB") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("a malformed device id", func(t *testing.T) {
		_, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"GPU-nope"}}}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("err = %v", err)
		}
	})
}

func TestAllocateWhenTheInformerLags(t *testing.T) {
	late := bound("late", `{"0":{"4":6}}`, "200", fixture.MakePod().GPUMem(6))
	h := newHarness(t, "a100x8", late)
	h.pods.mu.Lock()
	h.pods.cached = nil // the informer has not seen the bind yet
	h.pods.mu.Unlock()
	pref, err := h.client.GetPreferredAllocation(h.ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: append(h.ids(0, 10), h.ids(4, 10)...), AllocationSize: 6},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h.ids(4, 6), pref.ContainerResponses[0].DeviceIDs); diff != "" {
		t.Errorf("preferred while the informer lags (-want +got):\n%s", diff)
	}
	resp, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: h.ids(4, 6)}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.ContainerResponses[0].Envs["ALIYUN_COM_GPU_MEM_IDX"]; got != "4" {
		t.Errorf("IDX %q", got)
	}
}

type runtimeObject = runtime.Object

var metav1GetOptions = metav1.GetOptions{}
