// Package e2e runs gpupack end to end on a local cluster: a real
// etcd, kube-apiserver and kube-scheduler, our extender as a process, and
// simulated GPU nodes running our device plugin on the mock NVML under a
// test kubelet (see package cluster).
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/test/cluster"
	"github.com/gpupack/gpupack/test/e2e/e2eutil"
)

var (
	local  *cluster.Cluster
	client kubernetes.Interface
)

// nodes are the simulated GPU nodes: mixed models across nodes.
var nodes = []cluster.NodeSpec{
	{Name: "a100-0", Preset: "a100x8"},
	{Name: "a100-1", Preset: "a100x8"},
	{Name: "mixed-0", Preset: "mixed"},
	{Name: "t4-0", Preset: "t4x4"},
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gpk")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The in-process components (device plugins, kubelets) log to a file
	// beside the control plane's logs.
	e2eutil.LogToFile(filepath.Join(dir, "nodes.log"))
	defer klog.Flush()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The real node's package (realnode) runs next, as make e2e runs them.
	c, err := cluster.Up(ctx, cluster.Options{Dir: dir, Nodes: nodes, Out: os.Stderr, Policy: "binpack", BuildNodeComponents: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bringing the local cluster up: %v\n(logs in %s)\n", err, dir)
		return 1
	}
	e2eutil.OnInterrupt(func() { c.Down(); os.RemoveAll(dir) })
	local, client = c, c.Client
	code := m.Run()
	c.Down()
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "logs of the failed run are in %s\n", dir)
	}
	return code
}
