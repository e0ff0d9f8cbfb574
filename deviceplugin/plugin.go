package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	"k8s.io/apimachinery/pkg/util/wait"
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

// requestTimeout bounds each request the plugin makes to the kubelet or the
// API server.
const requestTimeout = 10 * time.Second

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
	// Recorder records events on pods and on the node (nil: none).
	Recorder record.EventRecorder
	// EvictOverShareAfter evicts a pod whose container holds more than its
	// share for this long (0: never; the overrun is only reported).
	EvictOverShareAfter time.Duration
	// Synced reports whether the pod source has synced, for /readyz (nil:
	// always).
	Synced func() bool
	// PodResourcesSocket is the kubelet's PodResources API. With it, what
	// containers hold is what the kubelet says, and annotations are
	// reconciled with it; without it (""), containers hold what the plugin
	// remembers serving.
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
	byUUID map[string]int // card UUID -> index; not changed after New
	// watchers get the device list again when health changes.
	watchers map[chan struct{}]struct{}

	procs      ProcFS
	metrics    *pluginMetrics
	registered atomic.Bool
	// holdings says what containers hold; kick asks reconciliation for a
	// pass soon.
	holdings holdings
	kick     chan struct{}
	// publishBackoff paces the retries of a failed publish of the node's
	// cards (publishRetrying).
	publishBackoff wait.Backoff
	// closers are what New opened (the PodResources connection), closed
	// once by close.
	closers   []io.Closer
	closeOnce sync.Once
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
		watchers: map[chan struct{}]struct{}{}, publishBackoff: publishBackoff}
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
	if opts.PodResourcesSocket == "" {
		p.holdings = newServedHoldings(client)
	} else {
		conn, err := grpc.NewClient("unix://"+opts.PodResourcesSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("the kubelet's PodResources API at %s: %w", opts.PodResourcesSocket, err)
		}
		p.closers = append(p.closers, conn)
		p.holdings = &podResourcesHoldings{client: podresourcesapi.NewPodResourcesListerClient(conn), byUUID: p.byUUID, kick: p.kick}
	}
	p.procs = ProcFS{Root: opts.ProcRoot}
	if p.procs.Root == "" {
		p.procs.Root = "/proc"
	}
	p.metrics = newMetrics(p)
	return p, nil
}

// close closes what New opened (the connection to the kubelet's
// PodResources API), once.
func (p *Plugin) close() {
	p.closeOnce.Do(func() {
		for _, c := range p.closers {
			_ = c.Close()
		}
	})
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

// GetPreferredAllocation steers the kubelet to the cards of the oldest
// waiting plan of the requested size. When the informer has no such plan
// yet (it lags the bind), the API server is asked.
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
	waiting, err := p.waiting(ctx, pods)
	if err != nil {
		return nil, false, err
	}
	resp := &pluginapi.PreferredAllocationResponse{}
	complete := true
	for _, cr := range req.ContainerRequests {
		pref := &pluginapi.ContainerPreferredAllocationResponse{}
		for _, pl := range waiting {
			if pl.units() != int64(cr.AllocationSize) {
				continue
			}
			if ids := p.pick(pl.cards, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs); ids != nil {
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

// Allocate serves each container from the waiting plan equal to the
// cards and units its device ids name.
func (p *Plugin) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, cr := range req.ContainerRequests {
		got, err := PerCard(cr.DevicesIds, p.byUUID)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "node %s: %v", p.opts.NodeName, err)
		}
		pl, err := p.planFor(ctx, got)
		if err != nil {
			p.metrics.allocations.WithLabelValues("refused").Inc()
			klog.FromContext(ctx).Info("Refused an allocation", "err", err)
			return nil, err
		}
		p.metrics.allocations.WithLabelValues("allocated").Inc()
		resp.ContainerResponses = append(resp.ContainerResponses, p.containerResponse(pl))
		klog.FromContext(ctx).Info("Allocated", "node", p.opts.NodeName, "pod", klog.KObj(pl.pod), "container", pl.container, "cards", describeCards(pl.cards))
		p.holdings.served(ctx, pl)
	}
	return resp, nil
}

// planFor finds the waiting plan equal to got among the informer's pods,
// then among the API server's (the informer may lag a bind).
func (p *Plugin) planFor(ctx context.Context, got map[int]int64) (plan, error) {
	var waiting []plan
	for _, list := range []func() ([]*corev1.Pod, error){p.pods.Cached, func() ([]*corev1.Pod, error) { return p.pods.Live(ctx) }} {
		pods, err := list()
		if err != nil {
			return plan{}, status.Errorf(codes.Unavailable, "listing pods of node %s: %v", p.opts.NodeName, err)
		}
		if waiting, err = p.waiting(ctx, pods); err != nil {
			return plan{}, err
		}
		if pl, ok := match(waiting, got); ok {
			return pl, nil
		}
	}
	names := make([]string, len(waiting))
	for i, pl := range waiting {
		names[i] = pl.String()
	}
	if len(names) == 0 {
		names = []string{"none"}
	}
	return plan{}, status.Errorf(codes.FailedPrecondition,
		"node %s: no pod bound here waits for %s %s; pods waiting: %s",
		p.opts.NodeName, describeCards(got), p.opts.Unit, strings.Join(names, "; "))
}

// waiting is the plans of pods that wait for Allocate, given what
// containers hold.
func (p *Plugin) waiting(ctx context.Context, pods []*corev1.Pod) ([]plan, error) {
	h, err := p.holdings.list(ctx, pods)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "node %s: %v", p.opts.NodeName, err)
	}
	waiting, _ := waitingPlans(plans(pods), h)
	return waiting, nil
}

// containerResponse is what a container served from pl gets: the plan's
// environment, and what Options add to every container.
func (p *Plugin) containerResponse(pl plan) *pluginapi.ContainerAllocateResponse {
	env := p.env(pl)
	maps.Copy(env, p.opts.Env) // names apart from env's (New checked)
	r := &pluginapi.ContainerAllocateResponse{Envs: env}
	for _, m := range p.opts.Mounts {
		r.Mounts = append(r.Mounts, &pluginapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, ReadOnly: m.ReadOnly})
	}
	return r
}

// env is the environment of a container served from pl.
func (p *Plugin) env(pl plan) map[string]string {
	idx := make([]int, 0, len(pl.cards))
	for c := range pl.cards {
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
		perCardUnits = pl.cards[i]
	}
	p.mu.Unlock()
	limitMiB := perCardUnits * p.opts.Unit.MiB()
	fraction := float64(limitMiB) / float64(devMiB)
	env := map[string]string{
		contract.EnvVisibleDevices: strings.Join(uuids, ","),
		contract.EnvIndex:          strings.Join(indices, ","),
		contract.EnvPodMem:         strconv.FormatInt(pl.podPlan.Total(), 10),
		contract.EnvContainerMem:   strconv.FormatInt(pl.units(), 10),
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
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
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
