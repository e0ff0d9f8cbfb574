// Command gpupack-demo brings up a local GPU-sharing cluster (real etcd,
// kube-apiserver and kube-scheduler; our extender; simulated GPU nodes with
// our device plugin), submits a sample AI-training workload drawn from the
// production trace, prints where every share went and how busy each card
// is, and stays up until Ctrl-C so that you can kubectl against it.
//
// Run as root on a machine that can host a real node (see
// cluster.CanRunRealNodes), it also brings up a real node (kubelet,
// containerd, kube-proxy) and installs the chart with helm: the scheduler
// and the device plugin run as pods, and the training pods placed on the
// real node run as containers. Ctrl-C tears everything down.
package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/inspect"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/test/cluster"
)

func main() {
	pods := flag.Int("pods", 48, "pods in the sample workload")
	trace := flag.String("trace", "../../shared/traces/openb/openb_pod_list_default.csv", "openb pod list to draw shares from (a built-in mix when absent)")
	dir := flag.String("dir", "", "state, logs and kubeconfig (default: a new temporary folder)")
	exit := flag.Bool("exit", false, "tear down after printing instead of waiting for Ctrl-C")
	real := flag.Bool("real-node", true, "also run a real node and install the chart with helm, where this machine can (root)")
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("v", "0")
	_ = klogFlags.Set("logtostderr", "false")
	_ = klogFlags.Set("stderrthreshold", "FATAL")
	flag.Parse()
	if err := run(*pods, *trace, *dir, *exit, *real, klogFlags); err != nil {
		fmt.Fprintln(os.Stderr, "gpupack-demo:", err)
		os.Exit(1)
	}
}

// realNode is the demo's real node: 8 simulated A100s, the chart's device
// plugin on them as a DaemonSet pod.
const realNode = "gpu-real"

// chartValues install the chart with the images built here (never pulled:
// there is no registry) and the device plugin on simulated cards.
var chartValues = []string{
	"--set", "extender.image.tag=" + cluster.ImageTag, "--set", "extender.image.pullPolicy=Never",
	"--set", "devicePlugin.image.tag=" + cluster.ImageTag, "--set", "devicePlugin.image.pullPolicy=Never",
	"--set", "scheduler.image.pullPolicy=Never",
	"--set", "devicePlugin.mock.enabled=true", "--set", "devicePlugin.mock.cards=a100x8",
}

func run(n int, trace, dir string, exit, real bool, klogFlags *flag.FlagSet) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dir == "" {
		if dir, err = os.MkdirTemp("", "gpk"); err != nil {
			return err
		}
		// A folder of our own goes when the demo ends well (a real node's
		// images and containers take hundreds of MiB); after an error it
		// stays, with the logs.
		defer func() {
			if err == nil {
				os.RemoveAll(dir)
			}
		}()
	}
	// The in-process components (simulated nodes) log beside the others.
	_ = klogFlags.Set("log_file", filepath.Join(dir, "nodes.log"))
	opts := cluster.Options{Dir: dir, Out: os.Stdout, Nodes: []cluster.NodeSpec{
		{Name: "gpu-a100", Preset: "a100x8"}, {Name: "gpu-mixed", Preset: "mixed"}, {Name: "gpu-t4", Preset: "t4x4"},
	}}
	if real {
		if err := cluster.CanRunRealNodes(); err != nil {
			fmt.Printf("simulated nodes only: %v\n", err)
			real = false
		} else {
			opts.RealNodes = []cluster.RealNodeSpec{{Name: realNode, Labels: map[string]string{contract.LabelGPUShare: "true"}}}
			opts.InClusterScheduler = true
		}
	}
	c, err := cluster.Up(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Println("\ninterrupted: the cluster is down")
			return nil
		}
		return fmt.Errorf("%w (logs in %s)", err, dir)
	}
	// Ctrl-C (or SIGTERM) ends ctx wherever the demo is: each step below
	// then returns, and Down stops every process the cluster started, the
	// simulated nodes' training jobs included, before the demo exits. A
	// second Ctrl-C meanwhile is ignored, so that the teardown completes.
	defer func() {
		c.Down()
		if ctx.Err() != nil {
			fmt.Println("the cluster is down")
		}
	}()
	defer context.AfterFunc(ctx, func() { fmt.Println("\ninterrupted: tearing the cluster down...") })()
	if real {
		start := time.Now()
		fmt.Println("\nhelm install gpupack deploy/chart/gpupack --namespace kube-system (images built here, device plugin on simulated cards)...")
		if _, err := c.Helm(ctx, append([]string{"install", "gpupack", "deploy/chart/gpupack", "--namespace", "kube-system", "--wait", "--timeout", "5m"}, chartValues...)...); err != nil {
			return interrupted(ctx, err)
		}
		fmt.Printf("the chart's scheduler and device plugin are Ready (%s)\n", time.Since(start).Round(100*time.Millisecond))
	}

	shares := workload(trace, n)
	fmt.Printf("\nsubmitting %d training pods (schedulerName: %s)...\n", len(shares), cluster.SchedulerName)
	for i, s := range shares {
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod(i, s), metav1.CreateOptions{}); err != nil {
			return interrupted(ctx, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return interrupted(ctx, err)
		}
		settled := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning || schedulingFailed(p) {
				settled++
			}
		}
		if settled == len(list.Items) || !sleep(ctx, time.Second) {
			break
		}
	}
	if !sleep(ctx, 10*time.Second) { // let the jobs load and warm up
		return nil
	}
	if err := printCluster(ctx, c); err != nil {
		return interrupted(ctx, err)
	}
	fmt.Printf("\nkubeconfig: %s\n  kubectl --kubeconfig %s get pods -A -o wide\n  %s --kubeconfig %s -d\n", c.Kubeconfig, c.Kubeconfig, c.InspectBinary(), c.Kubeconfig)
	if exit {
		return nil
	}
	fmt.Println("\nthe cluster stays up; Ctrl-C tears it down")
	<-ctx.Done()
	return nil
}

// interrupted is err, or nil when ctx ended (Ctrl-C): the demo then ends
// as it should, by tearing the cluster down.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// sleep waits for d, or less when ctx ends first: false then.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// share is one pod's ask: GiB on one card, or whole cards.
type share struct{ mem, count int64 }

// workload draws the GPU-sharing pods of the trace (those asking for a
// fraction of one GPU): a fraction becomes that share of a 16 GiB card, at
// least 1 GiB, the size of the trace's common cards.
func workload(path string, n int) []share {
	var pool []share
	if f, err := os.Open(path); err == nil {
		defer f.Close()
		r := csv.NewReader(f)
		head, _ := r.Read()
		col := map[string]int{}
		for i, h := range head {
			col[h] = i
		}
		for {
			rec, err := r.Read()
			if err == io.EOF || err != nil {
				break
			}
			gpus, _ := strconv.Atoi(rec[col["num_gpu"]])
			milli, _ := strconv.Atoi(rec[col["gpu_milli"]])
			if gpus == 1 && milli < 1000 {
				pool = append(pool, share{mem: max(1, int64(milli)*16/1000)})
			}
		}
	}
	if len(pool) == 0 {
		pool = []share{{mem: 2}, {mem: 4}, {mem: 8}, {mem: 8}, {mem: 12}, {mem: 16}}
	}
	rng := rand.New(rand.NewPCG(42, 42))
	out := make([]share, n)
	for i := range out {
		out[i] = pool[rng.IntN(len(pool))]
	}
	return out
}

func pod(i int, s share) *corev1.Pod {
	lim := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}
	if s.mem > 0 {
		lim[contract.ResourceGPUMem] = *resource.NewQuantity(s.mem, resource.DecimalSI)
	}
	if s.count > 0 {
		lim[contract.ResourceGPUCount] = *resource.NewQuantity(s.count, resource.DecimalSI)
	}
	// It may land on a simulated node (which tolerates its taint) or on
	// the real one, where the image runs as a container.
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("train-%02d", i), Labels: map[string]string{"app": "train"}},
		Spec: corev1.PodSpec{SchedulerName: cluster.SchedulerName, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{
			Name: "train", Image: cluster.TrainImage, ImagePullPolicy: corev1.PullNever,
			Args:      []string{"--steps=1000000", "--step-time=250ms", fmt.Sprintf("--seed=%d", i)},
			Resources: corev1.ResourceRequirements{Limits: lim, Requests: lim.DeepCopy()},
		}},
			Tolerations: []corev1.Toleration{{Key: cluster.SimulatedTaint.Key, Operator: corev1.TolerationOpExists, Effect: cluster.SimulatedTaint.Effect}},
		},
	}
}

func schedulingFailed(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return true
		}
	}
	return false
}

// printCluster prints, per node and card, the allocation the pods record
// (as kubectl inspect gpushare reads it) and the use the simulated cards
// report, then the pending pods.
func printCluster(ctx context.Context, c *cluster.Cluster) error {
	view, err := inspect.Collect(ctx, c.Client, inspect.Options{})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nNODE\tCARD\tMODEL\tALLOCATED/TOTAL (GiB)\tUSED (GiB)\tSM UTIL\tPODS")
	var alloc, total int64
	for _, n := range view.Nodes {
		state, err := cardState(c, n.Name)
		if err != nil {
			return err
		}
		for _, card := range n.Cards {
			var usedMiB int64
			sm := 0
			if card.Index < len(state.Cards) {
				for _, p := range state.Cards[card.Index].Processes {
					usedMiB += p.UsedMiB
					sm += p.SM
				}
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%d/%d\t%.1f\t%d%%\t%d\n", n.Name, card.Index, card.Model, card.Allocated, card.Total, float64(usedMiB)/1024, min(sm, 100), len(card.Pods))
		}
		alloc += n.Allocated()
		total += n.Total()
	}
	fmt.Fprintf(w, "TOTAL\t\t\t%d/%d (%d%%)\t\t\t\n", alloc, total, 100*alloc/max(total, 1))
	w.Flush()
	list, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	onReal := 0
	for _, p := range list.Items {
		if p.Spec.NodeName == "" {
			fmt.Printf("pending: %s (%s)\n", p.Name, reason(p))
		}
		if c.RealNodes[p.Spec.NodeName] != nil && p.Status.Phase == corev1.PodRunning {
			onReal++
		}
	}
	for name := range c.RealNodes {
		fmt.Printf("real node %s: %d training pods running as containers (kubectl --kubeconfig %s get pods -o wide --field-selector spec.nodeName=%s)\n", name, onReal, c.Kubeconfig, name)
	}
	return nil
}

// cardState reads a node's simulated cards: a simulated node's store, or
// the state the real node's device plugin pod keeps on its hostPath.
func cardState(c *cluster.Cluster, node string) (*mock.State, error) {
	if n := c.Nodes[node]; n != nil {
		return n.Store.Read()
	}
	if n := c.RealNodes[node]; n != nil {
		st, err := mock.Open(n.Root(mockStateDir + "/nvml.json"))
		if err != nil {
			return nil, err
		}
		return st.Read()
	}
	return &mock.State{}, nil
}

// mockStateDir is the chart's devicePlugin.mock.stateDir default.
const mockStateDir = "/var/lib/gpupack/mock"

func reason(p corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Message
		}
	}
	return "not scheduled yet"
}
