package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

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
	// Out gets progress (build, start-up).
	Out io.Writer
}

// Cluster is a running local cluster.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Client     kubernetes.Interface
	Nodes      map[string]*Node
	bins       Binaries
	cp         *controlPlane
	ext        *extender
	sched      *process
	ctx        context.Context
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
	start := time.Now()
	bins, err := EnsureBinaries(ctx, filepath.Join(opts.Dir, "bin"), opts.Out)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: opts.Dir, bins: bins, Nodes: map[string]*Node{}, ctx: ctx}
	if c.cp, err = startControlPlane(ctx, bins, opts.Dir); err != nil {
		return nil, err
	}
	c.Kubeconfig = c.cp.kubeconfig
	fmt.Fprintf(opts.Out, "control plane up at %s (%s)\n", c.cp.url, time.Since(start).Round(time.Millisecond))
	if c.Client, err = c.client("gpupack-test"); err != nil {
		c.Down()
		return nil, err
	}
	for _, spec := range opts.Nodes {
		if err := c.AddNode(spec); err != nil {
			c.Down()
			return nil, err
		}
	}
	if c.ext, err = newExtender(bins.Extender, opts.Dir, c.Kubeconfig, opts.Policy); err != nil {
		c.Down()
		return nil, err
	}
	if err := c.ext.start(ctx); err != nil {
		c.Down()
		return nil, err
	}
	if c.sched, err = startScheduler(ctx, bins, opts.Dir, c.Kubeconfig, c.ext.URL()); err != nil {
		c.Down()
		return nil, err
	}
	fmt.Fprintf(opts.Out, "cluster up with %d GPU nodes in %s; kubeconfig %s\n", len(opts.Nodes), time.Since(start).Round(time.Millisecond), c.Kubeconfig)
	return c, nil
}

func (c *Cluster) client(agent string) (kubernetes.Interface, error) {
	rc := rest.CopyConfig(c.cp.rest)
	rc.UserAgent = agent
	return kubernetes.NewForConfig(rc)
}

// AddNode starts a simulated GPU node.
func (c *Cluster) AddNode(spec NodeSpec) error {
	n, err := startNode(c.ctx, c.client, c.bins, filepath.Join(c.Dir, "n"), spec)
	if err != nil {
		return fmt.Errorf("node %s: %w", spec.Name, err)
	}
	c.Nodes[spec.Name] = n
	return nil
}

// KillExtender kills the extender at once, as a crash would.
func (c *Cluster) KillExtender() { c.ext.proc.kill() }

// StartExtender starts the extender again and waits until it is ready.
func (c *Cluster) StartExtender() error { return c.ext.start(c.ctx) }

// Down stops everything: nodes, scheduler, extender, API server, etcd.
func (c *Cluster) Down() {
	for _, n := range c.Nodes {
		n.Stop()
	}
	c.sched.stop(5 * time.Second)
	if c.ext != nil {
		c.ext.proc.stop(5 * time.Second)
	}
	if c.cp != nil {
		c.cp.stop()
	}
}

// InspectURL is the extender's per-node, per-card view.
func (c *Cluster) InspectURL() string { return c.ext.URL() + "/inspect" }
