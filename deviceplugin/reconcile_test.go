package deviceplugin

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// podResources is the kubelet's PodResources API, serving what the test
// says containers hold.
type podResources struct {
	podresourcesapi.UnimplementedPodResourcesListerServer
	mu   sync.Mutex
	pods []*podresourcesapi.PodResources
}

func (s *podResources) List(context.Context, *podresourcesapi.ListPodResourcesRequest) (*podresourcesapi.ListPodResourcesResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &podresourcesapi.ListPodResourcesResponse{PodResources: s.pods}, nil
}

func (s *podResources) hold(pods ...*podresourcesapi.PodResources) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods = append(s.pods, pods...)
}

// servePodResources serves the API on dir/pr.sock.
func servePodResources(t testing.TB, dir string, opts ...grpc.ServerOption) (*podResources, string) {
	t.Helper()
	sock := filepath.Join(dir, "pr.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	pr := &podResources{}
	podresourcesapi.RegisterPodResourcesListerServer(srv, pr)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return pr, sock
}

// holding says a container holds the given fake devices.
func holding(pod, container string, ids ...string) *podresourcesapi.PodResources {
	return &podresourcesapi.PodResources{Name: pod, Namespace: "default", Containers: []*podresourcesapi.ContainerResources{{
		Name: container, Devices: []*podresourcesapi.ContainerDevices{{ResourceName: string(contract.ResourceGPUMem), DeviceIds: ids}},
	}}}
}

func TestAllocateAndReconcileFromWhatTheKubeletSays(t *testing.T) {
	// q (bound first) waits for 4 GiB on card 2, p for 4 GiB on card 1.
	// fine holds what it was granted. wrong holds card 6 though granted
	// card 5 (a kubelet that ignored the preference).
	q := bound("q", `{"0":{"2":4}}`, "0", fixture.MakePod().GPUMem(4)).DeepCopy()
	q.Annotations[contract.AnnotationSignature] = "sig"
	p := bound("p", `{"0":{"1":4}}`, "1", fixture.MakePod().GPUMem(4))
	fine := bound("fine", `{"0":{"3":2}}`, "2", fixture.MakePod().GPUMem(2))
	wrong := bound("wrong", `{"0":{"5":1}}`, "3", fixture.MakePod().GPUMem(1)).DeepCopy()
	wrong.Annotations[contract.AnnotationSignature] = "sig" // dropped: it holds no plan
	rec := record.NewFakeRecorder(10)
	dir := t.TempDir()
	kubelet, sock := servePodResources(t, dir)
	h := newHarnessWith(t, "a100x8", func(o *Options) { o.Recorder, o.PodResourcesSocket = rec, sock }, q, p, fine, wrong)
	kubelet.hold(holding("fine", "c0", h.ids(3, 2)...), holding("wrong", "c0", h.ids(6, 1)...), holding("gone", "c0", h.ids(7, 1)...))

	// The kubelet admits p first: the plugin cannot tell p from q and
	// steers it to the oldest 4 GiB plan, q's card 2.
	admit := func(pod string, free []string) []string {
		t.Helper()
		pref, err := h.client.GetPreferredAllocation(h.ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
			{AvailableDeviceIDs: free, AllocationSize: 4},
		}})
		if err != nil {
			t.Fatal(err)
		}
		ids := pref.ContainerResponses[0].DeviceIDs
		if _, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}}); err != nil {
			t.Fatalf("admitting %s on %v: %v", pod, ids, err)
		}
		kubelet.hold(holding(pod, "c0", ids...))
		return ids
	}
	free := append(h.ids(1, 10), h.ids(2, 10)...)
	if got := admit("p", free); !cmp.Equal(got, h.ids(2, 4)) {
		t.Fatalf("p steered to %v", got)
	}
	// Then q: what is left waiting is card 1 (p's plan), whatever pod it
	// was made for.
	if got := admit("q", h.ids(1, 10)); !cmp.Equal(got, h.ids(1, 4)) {
		t.Fatalf("q steered to %v", got)
	}
	// Nothing else waits: wrong's plan went with the devices it holds.
	if _, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: h.ids(5, 1)}}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a plan already used was served again: %v", err)
	}

	if err := h.plugin.Reconcile(h.ctx); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		pod, alloc, assigned string
		signed               bool
	}{
		{"p", `{"0":{"2":4}}`, "true", false},
		{"q", `{"0":{"1":4}}`, "true", true}, // holds p's plan: its own stays signed
		{"fine", `{"0":{"3":2}}`, "true", false},
		{"wrong", `{"0":{"6":1}}`, "true", false},
	}
	for _, tt := range tests {
		cur, err := h.kube.CoreV1().Pods("default").Get(h.ctx, tt.pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := cur.Annotations
		_, signed := a[contract.AnnotationSignature]
		if a[contract.AnnotationAllocation] != tt.alloc || a[contract.AnnotationAssigned] != tt.assigned || signed != tt.signed {
			t.Errorf("%s: allocation %s assigned %s signed %v; want %s %s %v", tt.pod, a[contract.AnnotationAllocation], a[contract.AnnotationAssigned], signed, tt.alloc, tt.assigned, tt.signed)
		}
	}
	if ev := events(rec); len(ev) != 3 || !strings.Contains(ev[0], ReasonAllocationCorrected) {
		t.Errorf("events = %q, want a GPUAllocationCorrected for each of p, q, wrong", ev)
	}
	// A second pass, over the updated pods, changes nothing.
	h.pods.mu.Lock()
	h.pods.cached = nil
	for _, n := range []string{"p", "q", "fine", "wrong"} {
		cur, _ := h.kube.CoreV1().Pods("default").Get(h.ctx, n, metav1.GetOptions{})
		h.pods.cached = append(h.pods.cached, cur)
	}
	h.pods.mu.Unlock()
	before := len(h.kube.Actions())
	if err := h.plugin.Reconcile(h.ctx); err != nil {
		t.Fatal(err)
	}
	for _, act := range h.kube.Actions()[before:] {
		if act.GetVerb() == "patch" {
			t.Errorf("second pass patched: %v", act)
		}
	}
}

func TestSwapBeforeTheSecondPodIsAdmitted(t *testing.T) {
	// While q waits on the plan p was served from, the allocations stay as
	// they are (p's plan is what steers q); p is marked assigned.
	q := bound("q", `{"0":{"2":4}}`, "0", fixture.MakePod().GPUMem(4))
	p := bound("p", `{"0":{"1":4}}`, "1", fixture.MakePod().GPUMem(4))
	kubelet, sock := servePodResources(t, t.TempDir())
	h := newHarnessWith(t, "a100x8", func(o *Options) { o.PodResourcesSocket = sock }, q, p)
	kubelet.hold(holding("p", "c0", h.ids(2, 4)...))
	if err := h.plugin.Reconcile(h.ctx); err != nil {
		t.Fatal(err)
	}
	for pod, want := range map[string][2]string{"p": {`{"0":{"1":4}}`, "true"}, "q": {`{"0":{"2":4}}`, "false"}} {
		cur, _ := h.kube.CoreV1().Pods("default").Get(h.ctx, pod, metav1.GetOptions{})
		if got := [2]string{cur.Annotations[contract.AnnotationAllocation], cur.Annotations[contract.AnnotationAssigned]}; got != want {
			t.Errorf("%s: allocation, assigned = %v, want %v", pod, got, want)
		}
	}
	pods, _ := h.pods.Cached()
	waiting, err := h.plugin.waiting(h.ctx, pods)
	if err != nil || len(waiting) != 1 || waiting[0].cards[1] != 4 {
		t.Errorf("waiting = %v, %v; want card 1: 4", waiting, err)
	}
}

// TestWaitingWhenTheKubeletDoesNotAnswer: with a PodResources socket
// nobody serves, nothing is served or reconciled.
func TestWaitingWhenTheKubeletDoesNotAnswer(t *testing.T) {
	h := newHarnessWith(t, "t4x4", func(o *Options) { o.PodResourcesSocket = filepath.Join(t.TempDir(), "nope.sock") })
	if err := h.plugin.Reconcile(h.ctx); err == nil {
		t.Error("no error without the PodResources API")
	}
	_, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: h.ids(0, 1)}}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Allocate without the PodResources API: %v", err)
	}
}

func TestDeletingPodDoesNotUseAnotherPlan(t *testing.T) {
	// leaving is being deleted while it still holds card 2, which q's plan
	// names; q still waits for card 2 once leaving's devices are freed.
	leaving := bound("leaving", `{"0":{"1":4}}`, "0", fixture.MakePod().GPUMem(4)).DeepCopy()
	now := metav1.Now()
	leaving.DeletionTimestamp = &now
	q := bound("q", `{"0":{"2":4}}`, "1", fixture.MakePod().GPUMem(4))
	kubelet, sock := servePodResources(t, t.TempDir())
	h := newHarnessWith(t, "a100x8", func(o *Options) { o.PodResourcesSocket = sock }, leaving, q)
	kubelet.hold(holding("leaving", "c0", h.ids(2, 4)...))
	pods, _ := h.pods.Cached()
	waiting, err := h.plugin.waiting(h.ctx, pods)
	if err != nil || len(waiting) != 1 || waiting[0].pod.Name != "q" || waiting[0].cards[2] != 4 {
		t.Errorf("waiting = %v, %v; want q on card 2", waiting, err)
	}
}
