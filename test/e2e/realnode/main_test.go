// Package realnode runs gpupack end to end the way a user runs it, on a
// real node: the local control plane (with kube-controller-manager), a
// node run by the real kubelet with containerd, runc and kube-proxy, images
// built from this checkout and imported into its containerd, and the chart
// installed with `helm install`: the scheduler (kube-scheduler and the
// extender) and the device plugin run as pods, training jobs as containers.
// The cards are simulated (the mock NVML, shared with the jobs' containers
// through a hostPath); everything else is real.
//
// A real node needs root and cgroups (cluster.CanRunRealNodes); elsewhere
// the tests say why and skip, except under CI=true, where they must run.
package realnode

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/test/cluster"
	"github.com/gpupack/gpupack/test/e2e/e2eutil"
)

var (
	local  *cluster.Cluster
	client kubernetes.Interface
	node   *cluster.RealNode
	// skip says why the tests cannot run here ("" when they can).
	skip string
	// installed is when helm install began.
	installed time.Time
)

// nodeName is the real node; its cards are the mock's a100x8 preset.
const (
	nodeName  = "gpu-0"
	nodeCards = 8
	cardGiB   = 80
	chartNS   = "kube-system"
)

// installArgs install the chart as a user would, with the images built
// here (pulled never: there is no registry) and the device plugin on
// simulated cards.
var installArgs = []string{
	"install", "gpupack", "deploy/chart/gpupack", "--namespace", chartNS,
	"--set", "extender.image.tag=" + cluster.ImageTag, "--set", "extender.image.pullPolicy=Never",
	"--set", "devicePlugin.image.tag=" + cluster.ImageTag, "--set", "devicePlugin.image.pullPolicy=Never",
	"--set", "scheduler.image.pullPolicy=Never",
	"--set", "devicePlugin.mock.enabled=true", "--set", "devicePlugin.mock.cards=a100x8",
	"--set", "devicePlugin.usageInterval=1s", "--set", "devicePlugin.reconcileInterval=5s",
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := cluster.CanRunRealNodes(); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "CI=true, and this machine cannot run a real node: %v\n", err)
			return 1
		}
		skip = "this machine cannot run a real node: " + err.Error()
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "gpkr")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	e2eutil.LogToFile(filepath.Join(dir, "test.log"))
	defer klog.Flush()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.Up(ctx, cluster.Options{
		Dir: dir, Out: os.Stderr, InClusterScheduler: true,
		RealNodes: []cluster.RealNodeSpec{{Name: nodeName, Labels: map[string]string{"gpushare": "true"}}},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bringing the cluster up: %v\n(logs in %s)\n", err, dir)
		return 1
	}
	e2eutil.OnInterrupt(func() { c.Down(); os.RemoveAll(dir) })
	local, client, node = c, c.Client, c.RealNodes[nodeName]
	installed = time.Now()
	if out, err := c.Helm(ctx, installArgs...); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		c.Down()
		return 1
	} else {
		fmt.Fprintf(os.Stderr, "%s", out)
	}
	code := m.Run()
	c.Down()
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "logs of the failed run are in %s\n", dir)
	}
	return code
}

// needNode skips a test where no real node can run.
func needNode(t *testing.T) {
	t.Helper()
	if skip != "" {
		t.Skip(skip)
	}
}
