package deviceplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/nvml"
)

// SocketName is gpushare's plugin socket, under the kubelet's folder.
const SocketName = "aliyungpushare.sock"

// Options configure a Plugin.
type Options struct {
	NodeName string
	// Dir is the kubelet's device-plugins folder.
	Dir  string
	Unit contract.Unit
	// CGPUDisabled sets CGPU_DISABLE=true in every container.
	CGPUDisabled bool
	Health       nvml.HealthOptions
	// ProcRoot is where the host's /proc is seen ("" for /proc): soft
	// isolation maps GPU processes to pods through their cgroups there.
	ProcRoot string
	// Recorder records events on pods (nil: none).
	Recorder record.EventRecorder
	// EvictOverShareAfter evicts a pod whose container holds more than its
	// share for this long (0: never; the overrun is only reported).
	EvictOverShareAfter time.Duration
	// Synced reports whether the pod source has synced, for /readyz (nil:
	// always).
	Synced func() bool
	// PodResourcesSocket is the kubelet's PodResources API. With it, what
	// waits for Allocate is worked out from what the kubelet says
	// containers hold, and annotations are reconciled with it; without it
	// (""), the plugin remembers what it served.
	PodResourcesSocket string
	// Mounts and Env are added to every container's allocation, beside
	// its cards' environment: what a container needs to use the cards that
	// the cards' environment does not carry, as the NVIDIA plugin adds
	// /dev/nvidia* device nodes (simulated cards: the folder of their
	// state, and GPUPACK_MOCK_STATE). Paths are absolute; Env may not name
	// a variable the plugin sets itself. New refuses others.
	Mounts []*pluginapi.Mount
	Env    map[string]string
}

// ownEnv are the variables Allocate sets in every container from its
// cards (CGPU_DISABLE only where isolation is disabled).
var ownEnv = []string{
	contract.EnvVisibleDevices, contract.EnvIndex, contract.EnvPodMem, contract.EnvContainerMem, contract.EnvDevMem,
	envLimitMiB, envFraction, envXLAFraction, envXLAPreallocate, envTFGrowth, contract.EnvCGPUDisable,
}

// The limits frameworks read from the environment.
const (
	envLimitMiB       = "GPUPACK_MEMORY_LIMIT_MIB"
	envFraction       = "GPUPACK_MEMORY_FRACTION"
	envXLAFraction    = "XLA_PYTHON_CLIENT_MEM_FRACTION"
	envXLAPreallocate = "XLA_PYTHON_CLIENT_PREALLOCATE"
	envTFGrowth       = "TF_FORCE_GPU_ALLOW_GROWTH"
)

// validateExtras checks Options.Mounts and Options.Env.
func validateExtras(opts Options) error {
	for i, m := range opts.Mounts {
		if m == nil || !filepath.IsAbs(m.ContainerPath) || !filepath.IsAbs(m.HostPath) {
			return fmt.Errorf("mount %d of every allocation (%v): want absolute container and host paths", i, m)
		}
	}
	for _, k := range ownEnv {
		if _, ok := opts.Env[k]; ok {
			return fmt.Errorf("the environment added to every allocation sets %s, which the plugin sets from the cards: want a name other than %s", k, strings.Join(ownEnv, ", "))
		}
	}
	for k := range opts.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("the environment added to every allocation has a variable named %q: want a non-empty name without '=' or NUL", k)
		}
	}
	return nil
}

// Plugin is the device plugin of one node.
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	opts   Options
	nvml   nvml.Interface
	pods   PodSource
	client kubernetes.Interface // nil: no annotation patches

	mu     sync.Mutex
	cards  []card
	byUUID map[string]int
	// done records the containers served: pod -> container index.
	done map[types.UID]map[int]bool
	// watchers get the device list again when health changes.
	watchers map[chan struct{}]struct{}

	procs      ProcFS
	metrics    *pluginMetrics
	registered atomic.Bool
	// podResources is the kubelet's PodResources client (nil without a
	// socket); kick asks for a reconciliation soon.
	podResources podresourcesapi.PodResourcesListerClient
	kick         chan struct{}
}

var _ pluginapi.DevicePluginServer = (*Plugin)(nil)

// New reads the cards and returns a plugin.
func New(opts Options, lib nvml.Interface, pods PodSource, client kubernetes.Interface) (*Plugin, error) {
	if err := validateExtras(opts); err != nil {
		return nil, err
	}
	devs, err := lib.Devices()
	if err != nil {
		return nil, fmt.Errorf("listing GPUs: %w", err)
	}
	if len(devs) == 0 {
		return nil, errors.New("NVML reports no GPU on this node")
	}
	p := &Plugin{opts: opts, nvml: lib, pods: pods, client: client, byUUID: map[string]int{},
		done: map[types.UID]map[int]bool{}, watchers: map[chan struct{}]struct{}{}}
	for _, d := range devs {
		p.cards = append(p.cards, card{Device: d, units: opts.Unit.FromMiB(d.MemoryMiB), healthy: true})
		p.byUUID[d.UUID] = d.Index
	}
	if size := listSize(p.cards); size > MaxListAndWatchBytes {
		var n int64
		for _, c := range p.cards {
			n += c.units
		}
		return nil, fmt.Errorf("%d cards in %s make %d fake devices, a %.1f MiB device list: over the %d MiB the kubelet accepts in one gRPC message, so it would never see the devices; use a coarser memory unit (GiB)",
			len(p.cards), opts.Unit, n, float64(size)/(1<<20), MaxListAndWatchBytes>>20)
	}
	p.kick = make(chan struct{}, 1)
	if opts.PodResourcesSocket != "" {
		conn, err := grpc.NewClient("unix://"+opts.PodResourcesSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("the kubelet's PodResources API at %s: %w", opts.PodResourcesSocket, err)
		}
		p.podResources = podresourcesapi.NewPodResourcesListerClient(conn)
	}
	p.procs = ProcFS{Root: opts.ProcRoot}
	if p.procs.Root == "" {
		p.procs.Root = "/proc"
	}
	p.metrics = newMetrics(p)
	return p, nil
}

// card returns the card with the given index, or nil; p.mu must be held.
func (p *Plugin) card(index int) *card {
	for i := range p.cards {
		if p.cards[i].Index == index {
			return &p.cards[i]
		}
	}
	return nil
}

// Inventory is the card inventory as the extender reads it.
func (p *Plugin) Inventory() *contract.Inventory {
	p.mu.Lock()
	defer p.mu.Unlock()
	return inventory(p.cards)
}

// GetDevicePluginOptions asks the kubelet for GetPreferredAllocation.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the fake devices, then again on every health change.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	changed := make(chan struct{}, 1)
	p.mu.Lock()
	p.watchers[changed] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.watchers, changed)
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		devs := listDevices(p.cards)
		p.mu.Unlock()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// setHealth records a card's health and tells every ListAndWatch stream.
func (p *Plugin) setHealth(index int, healthy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.card(index); c != nil {
		c.healthy = healthy
	}
	for ch := range p.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// WatchHealth applies NVML health events until ctx ends.
func (p *Plugin) WatchHealth(ctx context.Context) error {
	events, err := p.nvml.Health(ctx, p.opts.Health)
	if err != nil {
		return err
	}
	log := klog.FromContext(ctx)
	for e := range events {
		log.Info("Card health changed", "node", p.opts.NodeName, "card", e.Index, "healthy", e.Healthy, "reason", e.Reason)
		p.setHealth(e.Index, e.Healthy)
		if err := p.PublishNode(ctx); err != nil {
			log.Error(err, "Publishing card health")
		}
	}
	return nil
}

// GetPreferredAllocation steers the kubelet to the cards the extender chose
// for the oldest bound pod waiting with a container of this size. When the
// informer has no such pod yet (it lags the bind), the API server is asked.
func (p *Plugin) GetPreferredAllocation(ctx context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp, complete, err := p.prefer(ctx, req, p.pods.Cached)
	if err != nil || complete {
		return resp, err
	}
	resp, _, err = p.prefer(ctx, req, func() ([]*corev1.Pod, error) { return p.pods.Live(ctx) })
	return resp, err
}

// prefer answers from one list of pods; complete says every request got a
// preference.
func (p *Plugin) prefer(ctx context.Context, req *pluginapi.PreferredAllocationRequest, list func() ([]*corev1.Pod, error)) (*pluginapi.PreferredAllocationResponse, bool, error) {
	pods, err := list()
	if err != nil {
		return nil, false, status.Errorf(codes.Unavailable, "listing pods of node %s: %v", p.opts.NodeName, err)
	}
	ws, _, err := p.pending(ctx, pods)
	if err != nil {
		return nil, false, err
	}
	resp := &pluginapi.PreferredAllocationResponse{}
	complete := true
	for _, cr := range req.ContainerRequests {
		pref := &pluginapi.ContainerPreferredAllocationResponse{}
		for _, w := range ws {
			if w.units() != int64(cr.AllocationSize) {
				continue
			}
			if ids := p.pick(w.cards, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs); ids != nil {
				pref.DeviceIDs = ids
				break
			}
		}
		complete = complete && pref.DeviceIDs != nil
		resp.ContainerResponses = append(resp.ContainerResponses, pref)
	}
	return resp, complete, nil
}

// pick chooses, from the available ids, the given units on each card, the
// must-include ids first; nil if the cards do not have them.
func (p *Plugin) pick(cards map[int]int64, available, must []string) []string {
	need := map[int]int64{}
	for c, u := range cards {
		need[c] = u
	}
	var out []string
	take := func(ids []string) {
		for _, id := range ids {
			uuid, _, err := parseID(id)
			if err != nil {
				continue
			}
			idx, ok := p.byUUID[uuid]
			if !ok || need[idx] == 0 {
				continue
			}
			need[idx]--
			out = append(out, id)
		}
	}
	take(must)
	if len(out) != len(must) {
		return nil // a must-include id is on another card
	}
	rest := make([]string, 0, len(available))
	chosen := map[string]bool{}
	for _, id := range out {
		chosen[id] = true
	}
	for _, id := range available {
		if !chosen[id] {
			rest = append(rest, id)
		}
	}
	take(rest)
	for _, u := range need {
		if u != 0 {
			return nil
		}
	}
	return out
}

// Allocate serves each container from the cards its device ids name.
func (p *Plugin) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, cr := range req.ContainerRequests {
		got, err := PerCard(cr.DevicesIds, p.byUUID)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "node %s: %v", p.opts.NodeName, err)
		}
		w, err := p.claim(ctx, got)
		if err != nil {
			p.metrics.allocations.WithLabelValues("refused").Inc()
			klog.FromContext(ctx).Info("Refused an allocation", "err", err)
			return nil, err
		}
		p.metrics.allocations.WithLabelValues("allocated").Inc()
		resp.ContainerResponses = append(resp.ContainerResponses, p.containerResponse(w))
		klog.FromContext(ctx).Info("Allocated", "node", p.opts.NodeName, "pod", klog.KObj(w.pod), "container", w.container, "cards", describeCards(w.cards))
		if p.podResources == nil {
			p.markAssigned(ctx, w)
		} else {
			select { // annotations follow once the kubelet records the devices
			case p.kick <- struct{}{}:
			default:
			}
		}
	}
	return resp, nil
}

// claim finds the waiting container that the cards got belong to, from the
// informer, then from the API server.
func (p *Plugin) claim(ctx context.Context, got map[int]int64) (waiting, error) {
	var ws []waiting
	for _, list := range []func() ([]*corev1.Pod, error){p.pods.Cached, func() ([]*corev1.Pod, error) { return p.pods.Live(ctx) }} {
		pods, err := list()
		if err != nil {
			return waiting{}, status.Errorf(codes.Unavailable, "listing pods of node %s: %v", p.opts.NodeName, err)
		}
		var truth bool
		if ws, truth, err = p.pending(ctx, pods); err != nil {
			return waiting{}, err
		}
		w, ok := match(ws, got)
		if !ok {
			continue
		}
		if !truth {
			p.mu.Lock()
			if p.done[w.pod.UID] == nil {
				p.done[w.pod.UID] = map[int]bool{}
			}
			p.done[w.pod.UID][w.container] = true
			p.mu.Unlock()
		}
		return w, nil
	}
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.String()
	}
	if len(names) == 0 {
		names = []string{"none"}
	}
	return waiting{}, status.Errorf(codes.FailedPrecondition,
		"node %s: no pod bound here waits for %s %s; pods waiting: %s",
		p.opts.NodeName, describeCards(got), p.opts.Unit, strings.Join(names, "; "))
}

// pending is what waits for Allocate among pods: from what the kubelet
// says containers hold when its PodResources API is configured (truth is
// true), else from what this plugin remembers serving.
func (p *Plugin) pending(ctx context.Context, pods []*corev1.Pod) (ws []waiting, truth bool, err error) {
	if p.podResources == nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		return waitingContainers(pods, p.done), false, nil
	}
	h, err := p.holdings(ctx, pods)
	if err != nil {
		return nil, true, status.Errorf(codes.Unavailable, "node %s: %v", p.opts.NodeName, err)
	}
	ws, _ = pool(plans(pods), h)
	return ws, true, nil
}

// containerResponse is what a container gets: its cards' environment, and
// what Options add to every container.
func (p *Plugin) containerResponse(w waiting) *pluginapi.ContainerAllocateResponse {
	env := p.env(w)
	maps.Copy(env, p.opts.Env) // names apart from env's (New checked)
	r := &pluginapi.ContainerAllocateResponse{Envs: env}
	for _, m := range p.opts.Mounts {
		r.Mounts = append(r.Mounts, &pluginapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, ReadOnly: m.ReadOnly})
	}
	return r
}

// env is the container's environment for its cards.
func (p *Plugin) env(w waiting) map[string]string {
	idx := make([]int, 0, len(w.cards))
	for c := range w.cards {
		idx = append(idx, c)
	}
	sort.Ints(idx)
	var uuids, indices []string
	var perCardUnits, devUnits int64
	var devMiB int64
	p.mu.Lock()
	for _, i := range idx {
		if c := p.card(i); c != nil {
			uuids = append(uuids, c.UUID)
			if devUnits == 0 {
				devUnits, devMiB = c.units, c.MemoryMiB
			}
		}
		indices = append(indices, strconv.Itoa(i))
		perCardUnits = w.cards[i]
	}
	p.mu.Unlock()
	limitMiB := perCardUnits * p.opts.Unit.MiB()
	fraction := float64(limitMiB) / float64(devMiB)
	env := map[string]string{
		contract.EnvVisibleDevices: strings.Join(uuids, ","),
		contract.EnvIndex:          strings.Join(indices, ","),
		contract.EnvPodMem:         strconv.FormatInt(w.podAlloc.Total(), 10),
		contract.EnvContainerMem:   strconv.FormatInt(w.units(), 10),
		contract.EnvDevMem:         strconv.FormatInt(devUnits, 10),
		envLimitMiB:                strconv.FormatInt(limitMiB, 10),
		envFraction:                strconv.FormatFloat(fraction, 'f', 4, 64),
		// Frameworks that read a limit from the environment.
		envXLAFraction:    strconv.FormatFloat(fraction, 'f', 4, 64),
		envXLAPreallocate: "false",
		envTFGrowth:       "true",
	}
	if p.opts.CGPUDisabled {
		env[contract.EnvCGPUDisable] = "true"
	}
	return env
}

// markAssigned sets ALIYUN_COM_GPU_MEM_ASSIGNED=true once every GPU
// container of the pod was served.
func (p *Plugin) markAssigned(ctx context.Context, w waiting) {
	if p.client == nil {
		return
	}
	pod := w.pod
	p.mu.Lock()
	all := len(p.done[pod.UID]) == len(w.podAlloc)
	p.mu.Unlock()
	if !all {
		return
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID, "annotations": map[string]string{contract.AnnotationAssigned: "true"}}})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := p.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		klog.FromContext(ctx).Error(err, "Marking the pod assigned", "pod", klog.KObj(pod))
	}
}

// PreStartContainer is not used.
func (p *Plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// Serve listens on the plugin socket and serves until ctx ends.
func (p *Plugin) Serve(ctx context.Context) error {
	l, err := p.listen()
	if err != nil {
		return err
	}
	return p.serve(ctx, l)
}

// listen replaces the plugin socket with a new listener.
func (p *Plugin) listen() (net.Listener, error) {
	sock := filepath.Join(p.opts.Dir, SocketName)
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("removing the old socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", sock, err)
	}
	// A closing listener would unlink the path, which by then may be its
	// successor's: listen removes a stale socket itself.
	l.SetUnlinkOnClose(false)
	return l, nil
}

func (p *Plugin) serve(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		klog.FromContext(ctx).V(4).Info("Stopping the plugin server", "socket", l.Addr().String())
		srv.Stop()
		<-errc
		return nil
	}
}

// Register tells the kubelet about the plugin.
func (p *Plugin) Register(ctx context.Context) error {
	kubelet := filepath.Join(p.opts.Dir, filepath.Base(pluginapi.KubeletSocket))
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to the kubelet at %s: %w", kubelet, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     SocketName,
		ResourceName: string(contract.ResourceGPUMem),
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	if err != nil {
		return fmt.Errorf("registering with the kubelet at %s: %w", kubelet, err)
	}
	return nil
}
