package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
)

// TestKubeletTeardown pins the kubelet's lifecycle rule: once its context
// ends no job starts, and wait returns only when every job it started has
// been killed and reaped.
//
// "no job starts once teardown began" is the defect of issue 12 (a
// gpupack-train left running after Ctrl-C of make demo): the API server
// answers the pod's Running just as the kubelet's teardown has killed what
// it had; the kubelet then started the job, which nothing killed.
func TestKubeletTeardown(t *testing.T) {
	for _, tc := range []struct {
		name string
		// atRunning, when set, runs as the API server takes the pod's
		// Running status, before it answers.
		atRunning func(h *harness)
		wantJob   bool
	}{
		{name: "a running job is killed and reaped", wantJob: true},
		{name: "no job starts once teardown began", atRunning: func(h *harness) {
			h.cancel()
			h.waitClosing()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ran := make(chan struct{})
			h := newHarness(t, func(h *harness) {
				if tc.atRunning == nil {
					close(ran)
					return
				}
				var once sync.Once
				h.client.PrependReactor("update", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
					if a.GetSubresource() == "status" {
						once.Do(func() {
							tc.atRunning(h)
							close(ran)
						})
					}
					return false, nil, nil // the fake API server takes it
				})
			})
			pod := h.add(t, gpuPod("p", h.dir))
			var j *jobProcess
			if tc.wantJob {
				j = h.job(t, pod)
			}
			waitClosed(t, ran, "the pod's Running to reach the API server")
			h.stop(t)
			if pids := h.startedPIDs(t); len(pids) != 0 && !tc.wantJob {
				t.Errorf("jobs %v started after the kubelet closed", pids)
			}
			for _, pid := range h.startedPIDs(t) {
				if alive(pid) {
					t.Errorf("job %d is alive after the kubelet ended", pid)
				}
			}
			if j != nil {
				select {
				case <-j.done:
				default:
					t.Error("the job was not reaped when the kubelet ended")
				}
				if alive(j.pid) {
					t.Errorf("job %d is alive after the kubelet ended", j.pid)
				}
			}
		})
	}
}

// TestKubeletStopsDeletedPods: whichever way the informer says a pod went
// (a delete, a delete seen only as a tombstone after a relist, a deletion
// timestamp, a new pod under the same name), its job is killed and reaped
// and its devices freed.
func TestKubeletStopsDeletedPods(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone func(h *harness, pod *corev1.Pod)
	}{
		{name: "deleted", gone: func(h *harness, pod *corev1.Pod) {
			_ = h.store.Delete(pod)
			h.k.handler().OnDelete(pod)
		}},
		{name: "deleted, seen as a tombstone", gone: func(h *harness, pod *corev1.Pod) {
			_ = h.store.Delete(pod)
			h.k.handler().OnDelete(cache.DeletedFinalStateUnknown{Key: pod.Namespace + "/" + pod.Name, Obj: pod})
		}},
		{name: "being deleted", gone: func(h *harness, pod *corev1.Pod) {
			deleting := pod.DeepCopy()
			deleting.DeletionTimestamp = ptr(metav1.Now())
			_ = h.store.Update(deleting)
			h.k.handler().OnUpdate(pod, deleting)
		}},
		{name: "replaced under the same name", gone: func(h *harness, pod *corev1.Pod) {
			next := gpuPod(pod.Name, h.dir)
			next.UID = pod.UID + "-next"
			next.Spec.Containers[0].Resources.Limits = nil // no GPU: no job
			_ = h.store.Update(next)
			h.k.handler().OnUpdate(pod, next)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			pod := h.add(t, gpuPod("p", h.dir))
			j := h.job(t, pod)
			tc.gone(h, pod)
			waitUntil(t, "the pod's job to be killed and reaped", func() bool {
				select {
				case <-j.done:
					return true
				default:
					return false
				}
			})
			if alive(j.pid) {
				t.Errorf("job %d is alive", j.pid)
			}
			waitUntil(t, "the pod's devices to be freed", func() bool {
				h.k.mu.Lock()
				defer h.k.mu.Unlock()
				return len(h.k.taken) == 0
			})
		})
	}
}

// TestKubeletHandlersNeverBlock: an informer's handlers must return at
// once whatever the kubelet does. While its worker is held in a pod's
// admission, more pod events than any buffer would take arrive.
func TestKubeletHandlersNeverBlock(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	h := newHarness(t, func(h *harness) {
		var once sync.Once
		h.client.PrependReactor("update", "pods", func(clienttesting.Action) (bool, runtime.Object, error) {
			once.Do(func() {
				close(held)
				<-release
			})
			return false, nil, nil
		})
	})
	h.add(t, gpuPod("held", h.dir))
	waitClosed(t, held, "the worker to be held in the pod's admission")
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		for i := range 5000 {
			h.k.handler().OnAdd(gpuPod(fmt.Sprintf("p%d", i), h.dir), false)
		}
	}()
	select {
	case <-delivered:
	case <-time.After(time.Minute): // a guard against a hang, not a timing
		t.Error("an informer handler blocked while the kubelet's worker was busy")
	}
	close(release)
}

// harness runs a kubelet on a fake API server with a fake device plugin of
// four devices, and plays its informer: a test changes the informer's store
// and hands the kubelet the event, as an informer does. The pods' jobs are
// fakeJob.
type harness struct {
	k      *kubelet
	client *fake.Clientset
	store  cache.Store
	cancel context.CancelFunc
	dir    string
}

// fakeJob is the harness's job: it writes its PID to the file named by its
// first argument and sleeps until killed.
const fakeJob = `#!/bin/sh
echo $$ > "$1"
exec sleep 600
`

// newHarness starts a harness; setup, when set, readies its fake API
// server (reactors) before the kubelet runs.
func newHarness(t *testing.T, setup func(h *harness)) *harness {
	t.Helper()
	logger, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := t.TempDir()
	train := filepath.Join(dir, "train")
	if err := os.WriteFile(train, []byte(fakeJob), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"proc", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}})
	k := &kubelet{
		node: "n", client: client, log: logger,
		pluginDir: filepath.Join(dir, "dp"), procRoot: filepath.Join(dir, "proc"), podResourcesSocket: filepath.Join(dir, "pr.sock"),
		train: train, state: filepath.Join(dir, "nvml.json"), logDir: filepath.Join(dir, "logs"),
	}
	informer := cache.NewSharedIndexInformer(&cache.ListWatch{}, &corev1.Pod{}, 0, cache.Indexers{})
	h := &harness{k: k, client: client, store: informer.GetStore(), cancel: cancel, dir: dir}
	if setup != nil {
		setup(h)
	}
	if err := k.run(ctx, informer); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { h.stop(t) })
	// The plugin registers and lists its devices, as on a node.
	resource := string(contract.ResourceGPUMem)
	if err := k.PluginConnected(ctx, resource, fakePlugin{}); err != nil {
		t.Fatal(err)
	}
	devices := &api.ListAndWatchResponse{}
	for i := range 4 {
		devices.Devices = append(devices.Devices, &api.Device{ID: "d" + strconv.Itoa(i), Health: api.Healthy})
	}
	k.PluginListAndWatchReceiver(logger, resource, devices)
	return h
}

// add creates a pod on the API server and hands it to the kubelet.
func (h *harness) add(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if _, err := h.client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Add(pod); err != nil {
		t.Fatal(err)
	}
	h.k.handler().OnAdd(pod, false)
	return pod
}

// job waits until the pod's job started.
func (h *harness) job(t *testing.T, pod *corev1.Pod) *jobProcess {
	t.Helper()
	var j *jobProcess
	waitUntil(t, "the pod's job to start", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		if rp := h.k.pods[pod.UID]; rp != nil && len(rp.jobs) > 0 {
			j = rp.jobs[0]
		}
		return j != nil
	})
	return j
}

// waitClosing waits until the kubelet's teardown closed its door and
// killed what it had. It runs inside a fake API call: no t.
func (h *harness) waitClosing() {
	for range 30000 {
		h.k.mu.Lock()
		closing := h.k.closing
		h.k.mu.Unlock()
		if closing {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// stop ends the kubelet and waits for it. Should a job outlive the
// teardown the kubelet never ends: the test fails, and kills the job.
func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case <-h.k.ended:
		return
	case <-time.After(30 * time.Second): // a guard against a hang, not a timing
	}
	pids := h.startedPIDs(t)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-h.k.ended
	t.Fatalf("the kubelet did not end: jobs %v outlived its teardown", pids)
}

// startedPIDs are the PIDs of the jobs that started, as they wrote them.
func (h *harness) startedPIDs(t *testing.T) []int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(h.dir, "*.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// gpuPod is a pending pod bound to the harness's node, with one container
// asking for one gpu-mem unit, whose job writes its PID to dir/<name>.pid.
func gpuPod(name, dir string) *corev1.Pod {
	lim := corev1.ResourceList{contract.ResourceGPUMem: resource.MustParse("1")}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{
			Name: "c0", Image: "train", Args: []string{filepath.Join(dir, name+".pid")},
			Resources: corev1.ResourceRequirements{Limits: lim, Requests: lim},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
}

// fakePlugin is the device plugin as the kubelet calls it: it prefers the
// first devices offered and allocates anything, giving no environment.
type fakePlugin struct {
	api.DevicePluginClient // the calls the kubelet does not make
}

func (p fakePlugin) API() api.DevicePluginClient { return p }
func (fakePlugin) Resource() string              { return string(contract.ResourceGPUMem) }
func (fakePlugin) SocketPath() string            { return "" }

func (fakePlugin) GetPreferredAllocation(ctx context.Context, req *api.PreferredAllocationRequest, _ ...grpc.CallOption) (*api.PreferredAllocationResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	resp := &api.PreferredAllocationResponse{}
	for _, r := range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &api.ContainerPreferredAllocationResponse{DeviceIDs: r.AvailableDeviceIDs[:r.AllocationSize]})
	}
	return resp, nil
}

func (fakePlugin) Allocate(ctx context.Context, req *api.AllocateRequest, _ ...grpc.CallOption) (*api.AllocateResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	resp := &api.AllocateResponse{}
	for range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &api.ContainerAllocateResponse{Envs: map[string]string{}})
	}
	return resp, nil
}

// alive reports whether a process exists (a zombie included: the kubelet
// reaps its jobs).
func alive(pid int) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// waitClosed waits until ch is closed, failing the test after a generous
// bound (a guard against a hang, not a timing).
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitUntil polls cond, failing the test if it is still false after a
// generous bound (a guard against a hang, not a timing).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
