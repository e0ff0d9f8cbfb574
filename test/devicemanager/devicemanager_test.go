package devicemanager

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	dpserver "k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/plugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin"
	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/nvml"
	"github.com/gpupack/gpupack/test/cluster"
)

// kubelet is the device manager's side of the kubelet's registration
// server: it keeps the plugins that connected and what they list.
type kubelet struct {
	mu        sync.Mutex
	plugin    dpserver.DevicePlugin
	devices   []*api.Device
	connected chan struct{}
	listed    chan struct{}
}

func newKubelet() *kubelet {
	return &kubelet{connected: make(chan struct{}, 4), listed: make(chan struct{}, 64)}
}

func (k *kubelet) PluginConnected(_ context.Context, resource string, p dpserver.DevicePlugin) error {
	k.mu.Lock()
	k.plugin = p
	k.mu.Unlock()
	k.connected <- struct{}{}
	return nil
}

func (k *kubelet) PluginDisconnected(klog.Logger, string) {}

func (k *kubelet) PluginListAndWatchReceiver(_ klog.Logger, _ string, resp *api.ListAndWatchResponse) {
	k.mu.Lock()
	k.devices = resp.Devices
	k.mu.Unlock()
	k.listed <- struct{}{}
}

// CleanupPluginDirectory removes the plugin sockets, as the kubelet does at
// start (it keeps only its checkpoint).
func (k *kubelet) CleanupPluginDirectory(_ klog.Logger, dir string) error {
	return cluster.RemovePluginSockets(dir)
}

func (k *kubelet) api() api.DevicePluginClient {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.plugin.API()
}

// healthy lists the healthy device ids.
func (k *kubelet) healthy() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, d := range k.devices {
		if d.Health == api.Healthy {
			out = append(out, d.ID)
		}
	}
	sort.Strings(out)
	return out
}

// allocate does what the kubelet does for a container asking for size
// devices: it asks the plugin for a preference among the healthy devices
// not taken, takes what it preferred, and returns the environment of their
// allocation.
func (k *kubelet) allocate(ctx context.Context, t *testing.T, taken map[string]bool, size int) map[string]string {
	t.Helper()
	var free []string
	for _, id := range k.healthy() {
		if !taken[id] {
			free = append(free, id)
		}
	}
	pref, err := k.api().GetPreferredAllocation(ctx, &api.PreferredAllocationRequest{ContainerRequests: []*api.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: free, AllocationSize: int32(size)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ids := pref.ContainerResponses[0].DeviceIDs
	if len(ids) != size {
		t.Fatalf("preferred %d devices, want %d", len(ids), size)
	}
	for _, id := range ids {
		taken[id] = true
	}
	resp, err := k.api().Allocate(ctx, &api.AllocateRequest{ContainerRequests: []*api.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.ContainerResponses[0].Envs
}

// node is a plugin of node-a served under a kubelet's registration server.
type node struct {
	*kubelet
	srv       dpserver.Server
	plugin    *deviceplugin.Plugin
	pluginDir string
}

// runPlugin serves a plugin of node-a on lib, with node-a's pods from kube,
// and registers it with a kubelet's registration server in a fresh folder,
// until the test ends. It waits for the first device list.
func runPlugin(ctx context.Context, t *testing.T, lib nvml.Interface, kube kubernetes.Interface, opts deviceplugin.Options) *node {
	t.Helper()
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithCancel(ctx)
	dir, err := os.MkdirTemp("", "dm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts.NodeName, opts.Dir = "node-a", filepath.Join(dir, "device-plugins")
	pods := deviceplugin.NewNodePods(kube, "node-a")
	pods.Start(ctx)
	if !pods.WaitForSync(ctx) {
		t.Fatal("pods not synced")
	}
	plugin, err := deviceplugin.New(opts, lib, pods, kube)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{kubelet: newKubelet(), plugin: plugin, pluginDir: opts.Dir}
	n.srv = startServer(t, logger, opts.Dir, n.kubelet)
	done := make(chan error, 1)
	go func() { done <- plugin.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		pods.Shutdown()
	})
	wait(t, n.connected, "registration")
	wait(t, n.listed, "ListAndWatch")
	return n
}

func wait(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func startServer(t *testing.T, logger klog.Logger, dir string, k *kubelet) dpserver.Server {
	t.Helper()
	s, err := dpserver.NewServer(logger, filepath.Join(dir, "kubelet.sock"), k, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(logger); err != nil {
		t.Fatal(err)
	}
	return s
}

func bound(name, alloc string, w *fixture.PodWrapper) runtime.Object {
	return w.Name(name).Node("node-a").Annotation(contract.AnnotationAllocation, alloc).
		Annotation(contract.AnnotationAssumeTime, "1").Annotation(contract.AnnotationAssigned, "false").Obj()
}

// TestKubeletDeviceManager drives the plugin as the kubelet does:
// registration, ListAndWatch, GetPreferredAllocation then Allocate for each
// GPU container, health, and a kubelet restart.
func TestKubeletDeviceManager(t *testing.T) {
	logger, ctx := ktesting.NewTestContext(t)
	state, err := mock.NewState(mock.Config{Node: "node-a", Preset: "mixed"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := mock.Create(filepath.Join(t.TempDir(), "nvml.json"), state)
	if err != nil {
		t.Fatal(err)
	}
	lib, err := nvml.New(mock.New(store))
	if err != nil {
		t.Fatal(err)
	}
	kube := fake.NewClientset(fixture.MakeNode("node-a").Obj(),
		bound("same1", `{"0":{"0":4}}`, fixture.MakePod().GPUMem(4)),
		bound("same2", `{"0":{"1":4}}`, fixture.MakePod().GPUMem(4)),
		bound("two", `{"0":{"2":2},"1":{"2":3}}`, fixture.MakePod().GPUMem(2).GPUMem(3)),
		bound("multi", `{"0":{"0":5,"1":5}}`, fixture.MakePod().Container("10", "2", "")),
	)
	n := runPlugin(ctx, t, lib, kube, deviceplugin.Options{
		Unit:   contract.GiB,
		Health: nvml.HealthOptions{Poll: 20 * time.Millisecond, Quiet: 300 * time.Millisecond},
	})
	k, srv := n.kubelet, n.srv
	if n := len(k.healthy()); n != 80+80+15+15 {
		t.Fatalf("%d healthy devices, want 190 (2 x 80 GiB + 2 x 15 GiB)", n)
	}

	// The kubelet asks for a preference among the free devices, then
	// allocates what it chose, container by container.
	taken := map[string]bool{}
	allocate := func(size int) map[string]string { return k.allocate(ctx, t, taken, size) }
	uuid := func(i int) string { return state.Cards[i].UUID }
	tests := []struct {
		name string
		size int
		want map[string]string
	}{
		{"same1 (bound first, card 0)", 4, map[string]string{"NVIDIA_VISIBLE_DEVICES": uuid(0), "ALIYUN_COM_GPU_MEM_IDX": "0"}},
		{"same2 (card 1)", 4, map[string]string{"NVIDIA_VISIBLE_DEVICES": uuid(1), "ALIYUN_COM_GPU_MEM_IDX": "1"}},
		{"two, first container", 2, map[string]string{"ALIYUN_COM_GPU_MEM_IDX": "2", "ALIYUN_COM_GPU_MEM_CONTAINER": "2", "ALIYUN_COM_GPU_MEM_DEV": "15"}},
		{"two, second container", 3, map[string]string{"ALIYUN_COM_GPU_MEM_IDX": "2", "ALIYUN_COM_GPU_MEM_CONTAINER": "3", "ALIYUN_COM_GPU_MEM_POD": "5"}},
		{"multi, 5 GiB on each of cards 0 and 1", 10, map[string]string{"NVIDIA_VISIBLE_DEVICES": uuid(0) + "," + uuid(1), "GPUPACK_MEMORY_LIMIT_MIB": "5120"}},
	}
	for _, tt := range tests {
		env := allocate(tt.size)
		for key, v := range tt.want {
			if env[key] != v {
				t.Errorf("%s: %s = %q, want %q", tt.name, key, env[key], v)
			}
		}
	}
	// Nothing waits any more: a further request is refused with the reason.
	if _, err := k.api().Allocate(ctx, &api.AllocateRequest{ContainerRequests: []*api.ContainerAllocateRequest{{DevicesIds: k.healthy()[:1]}}}); err == nil ||
		!strings.Contains(err.Error(), "no pod bound here waits for") {
		t.Errorf("unexpected allocation: %v", err)
	}

	// A critical Xid on card 3: its devices turn unhealthy, then recover.
	if err := store.InjectXid(3, 79); err != nil {
		t.Fatal(err)
	}
	wait(t, k.listed, "the unhealthy list")
	if n := len(k.healthy()); n != 175 {
		t.Errorf("%d healthy devices after Xid 79 on card 3, want 175", n)
	}
	wait(t, k.listed, "the recovered list")
	if n := len(k.healthy()); n != 190 {
		t.Errorf("%d healthy devices after recovery, want 190", n)
	}

	// The kubelet restarts: its registration socket is recreated and the
	// plugin sockets removed; the plugin serves and registers again.
	if err := srv.Stop(logger); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, logger, n.pluginDir, k)
	defer srv.Stop(logger)
	wait(t, k.connected, "registration after the kubelet restarted")
	wait(t, k.listed, "ListAndWatch after the kubelet restarted")
	if n := len(k.healthy()); n != 190 {
		t.Errorf("%d healthy devices after the restart, want 190", n)
	}
}
