package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options shape a local cluster.
type Options struct {
	// Dir holds its state, logs and sockets (keep the path short: unix
	// sockets live there).
	Dir   string
	Nodes []NodeSpec
	// Policy is the extender's policy ("" for the default).
	Policy string
	// RealNodes run a real kubelet, containerd and kube-proxy each (root
	// only: see CanRunRealNodes). With them the control plane runs
	// kube-controller-manager, service accounts and node authorization,
	// and simulated nodes are tainted (SimulatedTaint) so that what the
	// cluster runs as pods stays on real nodes.
	RealNodes []RealNodeSpec
	// InClusterScheduler leaves the gpupack scheduler to the cluster (the
	// chart's, installed with helm): no extender process, and the host's
	// kube-scheduler runs only the default profile.
	InClusterScheduler bool
	// ExtenderProxy, when set (and InClusterScheduler is not), puts a
	// reverse proxy in this process between kube-scheduler and the
	// extender and serves ExtenderProxy(proxy) there: a test sees every
	// filter, prioritize and bind call as kube-scheduler makes it (to time
	// them, say). The calls then take one more loopback hop.
	ExtenderProxy func(http.Handler) http.Handler
	// PlainScheduler runs a second kube-scheduler, without the extender,
	// whose only profile is PlainSchedulerName: kube-scheduler alone, to
	// compare with. (The first one's default-scheduler profile calls the
	// extender too, for pods that ask for GPU resources: extenders are not
	// a profile's.)
	PlainScheduler bool
	// BuildNodeComponents builds the Kubernetes components real nodes run
	// (kubelet, kube-proxy, kube-controller-manager) into the cache with
	// the control plane's, when this machine can run real nodes, though
	// this cluster has none: a later cluster with real nodes finds them
	// there, and one go build of all five overlaps their packages and
	// links, while our own binaries build beside them.
	BuildNodeComponents bool
	// Out gets progress (build, start-up).
	Out io.Writer
}

// SimulatedTaint keeps pods off simulated nodes in clusters that have real
// ones: a pod meant to run on either tolerates it.
var SimulatedTaint = corev1.Taint{Key: "gpupack.io/simulated", Value: "true", Effect: corev1.TaintEffectNoSchedule}

// Cluster is a running local cluster.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Client     kubernetes.Interface
	Nodes      map[string]*Node
	RealNodes  map[string]*RealNode
	// Images is the tarball of the images real nodes run.
	Images string
	bins   Binaries
	cp     *controlPlane
	host   *host
	ext    *extender
	proxy  *http.Server
	sched  *process
	plain  *process
	ctx    context.Context
	// downOnce: Down runs once.
	downOnce sync.Once
}

// clientFactory makes API clients with a user agent.
type clientFactory func(agent string) (kubernetes.Interface, error)

// Up builds what is missing and starts the control plane, the extender,
// kube-scheduler with the gpupack profile, and the nodes.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Policy == "" {
		opts.Policy = "default"
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	real := len(opts.RealNodes) > 0
	if real {
		if err := CanRunRealNodes(); err != nil {
			return nil, err
		}
		if len(opts.RealNodes) > maxRealNodes {
			return nil, fmt.Errorf("%d real nodes asked, at most %d", len(opts.RealNodes), maxRealNodes)
		}
		for _, n := range opts.RealNodes {
			// The name is a Node's, and names the node's folders and cgroup.
			if errs := validation.IsDNS1123Subdomain(n.Name); len(errs) > 0 {
				return nil, fmt.Errorf("real node %q: %s", n.Name, strings.Join(errs, "; "))
			}
		}
	}
	start := time.Now()
	nodeComponents := real || opts.BuildNodeComponents && CanRunRealNodes() == nil
	bins, err := ensureBinaries(ctx, filepath.Join(opts.Dir, "bin"), real, nodeComponents, opts.Out)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: opts.Dir, bins: bins, Nodes: map[string]*Node{}, RealNodes: map[string]*RealNode{}, ctx: ctx}
	ok := false
	defer func() {
		if !ok {
			c.Down()
		}
	}()
	cpo := controlPlaneOptions{realNodes: real}
	if real {
		if c.Images, err = buildImages(bins, opts.Dir); err != nil {
			return nil, err
		}
		if c.host, err = acquireHost(); err != nil {
			return nil, err
		}
		cpo.address = c.host.apiAddress()
	}
	if c.cp, err = startControlPlane(ctx, bins, opts.Dir, cpo); err != nil {
		return nil, err
	}
	c.Kubeconfig = c.cp.kubeconfig
	fmt.Fprintf(opts.Out, "control plane up at %s (%s)\n", c.cp.url, time.Since(start).Round(time.Millisecond))
	if c.Client, err = c.client("gpupack-test"); err != nil {
		return nil, err
	}
	if real {
		if err := c.cp.startControllerManager(ctx, bins); err != nil {
			return nil, err
		}
	}
	for _, spec := range opts.Nodes {
		if err := c.AddNode(spec); err != nil {
			return nil, err
		}
	}
	extenderURL := ""
	if !opts.InClusterScheduler {
		if c.ext, err = newExtender(bins.Extender, opts.Dir, c.Kubeconfig, opts.Policy); err != nil {
			return nil, err
		}
		if err := c.ext.start(ctx); err != nil {
			return nil, err
		}
		extenderURL = c.ext.URL()
		if opts.ExtenderProxy != nil {
			if extenderURL, c.proxy, err = c.ext.proxy(opts.ExtenderProxy); err != nil {
				return nil, err
			}
		}
	}
	if c.sched, err = startScheduler(ctx, bins, opts.Dir, "kube-scheduler", c.Kubeconfig,
		schedulerConfig(c.Kubeconfig, corev1.DefaultSchedulerName, extenderURL)); err != nil {
		return nil, err
	}
	if opts.PlainScheduler {
		if c.plain, err = startScheduler(ctx, bins, opts.Dir, "kube-scheduler-plain", c.Kubeconfig,
			schedulerConfig(c.Kubeconfig, PlainSchedulerName, "")); err != nil {
			return nil, err
		}
	}
	for i, spec := range opts.RealNodes {
		nstart := time.Now()
		n, err := startRealNode(ctx, c.cp, c.host, bins, c.Images, filepath.Join(opts.Dir, "real"), i, spec)
		if err != nil {
			return nil, fmt.Errorf("real node %s: %w", spec.Name, err)
		}
		c.RealNodes[spec.Name] = n
		fmt.Fprintf(opts.Out, "real node %s Ready at %s (%s)\n", n.Name, n.IP, time.Since(nstart).Round(time.Millisecond))
	}
	fmt.Fprintf(opts.Out, "cluster up with %d simulated and %d real GPU nodes in %s; kubeconfig %s\n",
		len(opts.Nodes), len(opts.RealNodes), time.Since(start).Round(time.Millisecond), c.Kubeconfig)
	ok = true
	return c, nil
}

func (c *Cluster) client(agent string) (kubernetes.Interface, error) {
	rc := rest.CopyConfig(c.cp.rest)
	rc.UserAgent = agent
	return kubernetes.NewForConfig(rc)
}

// AddNode starts a simulated GPU node.
func (c *Cluster) AddNode(spec NodeSpec) error {
	n, err := startNode(c.ctx, c.client, c.bins, filepath.Join(c.Dir, "n"), spec, c.host != nil)
	if err != nil {
		return fmt.Errorf("node %s: %w", spec.Name, err)
	}
	c.Nodes[spec.Name] = n
	return nil
}

// Helm runs the pinned helm (test/tools/helm) against the cluster.
func (c *Cluster) Helm(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(moduleDir(), "tools", "helm", "helm.sh"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Dir = filepath.Dir(moduleDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// KillExtender kills the extender process at once, as a crash would (a
// cluster without InClusterScheduler).
func (c *Cluster) KillExtender() { c.ext.proc.kill() }

// StartExtender starts the extender process again and waits until it is
// ready (a cluster without InClusterScheduler).
func (c *Cluster) StartExtender() error { return c.ext.start(c.ctx) }

// Down stops everything: nodes, scheduler, extender, controllers, API
// server, etcd; then puts back what real nodes changed on the machine.
// It may be called again (a second Ctrl-C).
func (c *Cluster) Down() {
	c.downOnce.Do(func() {
		for _, n := range c.RealNodes {
			n.stop()
		}
		for _, n := range c.Nodes {
			n.Stop()
		}
		c.sched.stop(5 * time.Second)
		c.plain.stop(5 * time.Second)
		if c.proxy != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.proxy.Shutdown(ctx)
			cancel()
		}
		if c.ext != nil {
			c.ext.proc.stop(5 * time.Second)
		}
		if c.cp != nil {
			c.cp.stop()
		}
		if c.host != nil {
			c.host.release()
		}
	})
}

// InspectBinary is kubectl-inspect-gpushare, built from this checkout.
func (c *Cluster) InspectBinary() string { return c.bins.Inspect }

// ExtenderMetricsURL is the extender process's /metrics (a cluster
// without InClusterScheduler).
func (c *Cluster) ExtenderMetricsURL() string { return c.ext.metricsURL() }

// ExtenderProfileURL is where the extender process serves its CPU profile
// over the next seconds (a cluster without InClusterScheduler).
func (c *Cluster) ExtenderProfileURL(seconds int) string { return c.ext.profileURL(seconds) }

// ExtenderPID is the extender process's id, e.g. to read its memory in
// /proc (a cluster without InClusterScheduler; it changes when
// StartExtender starts it again).
func (c *Cluster) ExtenderPID() int { return c.ext.proc.cmd.Process.Pid }

// Processes are the PIDs of the processes the cluster runs on the host
// by name (etcd, kube-apiserver, the schedulers, the extender, and
// kube-controller-manager with real nodes), e.g. to read in /proc what each
// spends.
func (c *Cluster) Processes() map[string]int {
	pids := map[string]int{}
	for _, p := range []*process{c.sched, c.plain} {
		if p != nil {
			pids[p.name] = p.cmd.Process.Pid
		}
	}
	if c.ext != nil {
		pids[c.ext.proc.name] = c.ext.proc.cmd.Process.Pid
	}
	if c.cp != nil {
		for _, p := range []*process{c.cp.etcd, c.cp.apiserver, c.cp.controller} {
			if p != nil {
				pids[p.name] = p.cmd.Process.Pid
			}
		}
	}
	return pids
}

// InspectURL is the extender process's per-node, per-card view (a cluster
// without InClusterScheduler).
func (c *Cluster) InspectURL() string { return c.ext.URL() + "/inspect" }
