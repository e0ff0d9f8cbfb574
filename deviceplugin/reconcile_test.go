package deviceplugin

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// podResources is the kubelet's PodResources API, serving a fixed list.
type podResources struct {
	podresourcesapi.UnimplementedPodResourcesListerServer
	pods []*podresourcesapi.PodResources
}

func (s *podResources) List(context.Context, *podresourcesapi.ListPodResourcesRequest) (*podresourcesapi.ListPodResourcesResponse, error) {
	return &podresourcesapi.ListPodResourcesResponse{PodResources: s.pods}, nil
}

func servePodResources(t *testing.T, dir string, pods ...*podresourcesapi.PodResources) string {
	t.Helper()
	sock := filepath.Join(dir, "pod-resources.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesapi.RegisterPodResourcesListerServer(srv, &podResources{pods: pods})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return sock
}

// holding says a container holds the given fake devices.
func holding(pod, container string, ids ...string) *podresourcesapi.PodResources {
	return &podresourcesapi.PodResources{Name: pod, Namespace: "default", Containers: []*podresourcesapi.ContainerResources{{
		Name: container, Devices: []*podresourcesapi.ContainerDevices{{ResourceName: string(contract.ResourceGPUMem), DeviceIds: ids}},
	}}}
}

func TestReconcileWithPodResources(t *testing.T) {
	// swapped: the extender chose card 1, yet the kubelet gave card 2 (a
	// kubelet that ignored the preference). fine: as chosen, but the
	// plugin's assigned patch was lost. pending: created no container yet.
	swapped := bound("swapped", `{"0":{"1":4}}`, "1", fixture.MakePod().GPUMem(4).Started("c0", "x")).DeepCopy()
	swapped.Annotations[contract.AnnotationSignature] = "sig"
	fine := bound("fine", `{"0":{"3":2}}`, "2", fixture.MakePod().GPUMem(2).Started("c0", "y"))
	pending := bound("pending", `{"0":{"5":6}}`, "3", fixture.MakePod().GPUMem(6))
	rec := record.NewFakeRecorder(10)
	h := newHarnessWith(t, "a100x8", func(o *Options) { o.Recorder = rec }, swapped, fine, pending)
	sock := servePodResources(t, h.dir,
		holding("swapped", "c0", h.ids(2, 4)...),
		holding("fine", "c0", h.ids(3, 2)...),
		holding("pending", "c0", h.ids(5, 6)...), // Allocate in flight
		holding("gone", "c0", h.ids(6, 1)...),
	)
	if err := h.plugin.Reconcile(h.ctx, sock); err != nil {
		t.Fatal(err)
	}
	pod := func(name string) map[string]string {
		p, err := h.kube.CoreV1().Pods("default").Get(h.ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p.Annotations
	}
	a := pod("swapped")
	if a[contract.AnnotationAllocation] != `{"0":{"2":4}}` || a[contract.AnnotationIndex] != "2" || a[contract.AnnotationAssigned] != "true" {
		t.Errorf("swapped: %v", a)
	}
	if _, ok := a[contract.AnnotationSignature]; ok {
		t.Error("swapped: the extender's signature kept on an allocation it did not make")
	}
	if ev := events(rec); len(ev) != 1 || !strings.Contains(ev[0], `GPUAllocationCorrected The kubelet gave this pod's containers {"0":{"2":4}}, not the recorded {"0":{"1":4}}`) {
		t.Errorf("events = %q", ev)
	}
	if a := pod("fine"); a[contract.AnnotationAllocation] != `{"0":{"3":2}}` || a[contract.AnnotationAssigned] != "true" {
		t.Errorf("fine: %v", a)
	}
	if a := pod("pending"); a[contract.AnnotationAssigned] != "false" {
		t.Errorf("pending was touched while its Allocate may be in flight: %v", a)
	}
	// What was served is known: the pending pod still waits, the others not.
	pods, _ := h.pods.Cached()
	ws := waitingContainers(pods, h.plugin.done)
	if len(ws) != 1 || ws[0].pod.Name != "pending" {
		t.Errorf("waiting = %v", ws)
	}
	// A second pass, over the updated pods, changes nothing.
	h.pods.mu.Lock()
	h.pods.cached = nil
	for _, n := range []string{"swapped", "fine", "pending"} {
		p, _ := h.kube.CoreV1().Pods("default").Get(h.ctx, n, metav1.GetOptions{})
		h.pods.cached = append(h.pods.cached, p)
	}
	h.pods.mu.Unlock()
	before := len(h.kube.Actions())
	if err := h.plugin.Reconcile(h.ctx, sock); err != nil {
		t.Fatal(err)
	}
	for _, act := range h.kube.Actions()[before:] {
		if act.GetVerb() == "patch" {
			t.Errorf("second pass patched: %v", act)
		}
	}
}

func TestReconcileWithoutTheKubelet(t *testing.T) {
	h := newHarness(t, "t4x4")
	if err := h.plugin.Reconcile(h.ctx, filepath.Join(h.dir, "nope.sock")); err == nil {
		t.Error("no error without the PodResources socket")
	}
}
