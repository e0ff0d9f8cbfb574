// Command gpupack-demo brings up a local GPU-sharing cluster (real etcd,
// kube-apiserver and kube-scheduler; our extender; simulated GPU nodes with
// our device plugin), submits a sample AI-training workload drawn from the
// production trace, prints where every share went and how busy each card
// is, and stays up until Ctrl-C so that you can kubectl against it.
package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender"
	"github.com/gpupack/gpupack/test/cluster"
)

func main() {
	pods := flag.Int("pods", 48, "pods in the sample workload")
	trace := flag.String("trace", "../../shared/traces/openb/openb_pod_list_default.csv", "openb pod list to draw shares from (a built-in mix when absent)")
	dir := flag.String("dir", "", "state, logs and kubeconfig (default: a new temporary folder)")
	exit := flag.Bool("exit", false, "tear down after printing instead of waiting for Ctrl-C")
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("v", "0")
	_ = klogFlags.Set("logtostderr", "false")
	_ = klogFlags.Set("stderrthreshold", "FATAL")
	flag.Parse()
	if err := run(*pods, *trace, *dir, *exit); err != nil {
		fmt.Fprintln(os.Stderr, "gpupack-demo:", err)
		os.Exit(1)
	}
}

func run(n int, trace, dir string, exit bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "gpk"); err != nil {
			return err
		}
	}
	c, err := cluster.Up(ctx, cluster.Options{Dir: dir, Out: os.Stdout, Nodes: []cluster.NodeSpec{
		{Name: "gpu-a100", Preset: "a100x8"}, {Name: "gpu-mixed", Preset: "mixed"}, {Name: "gpu-t4", Preset: "t4x4"},
	}})
	if err != nil {
		return fmt.Errorf("%w (logs in %s)", err, dir)
	}
	defer c.Down()

	shares := workload(trace, n)
	fmt.Printf("\nsubmitting %d training pods (schedulerName: %s)...\n", len(shares), cluster.SchedulerName)
	for i, s := range shares {
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod(i, s), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		settled := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning || schedulingFailed(p) {
				settled++
			}
		}
		if settled == len(list.Items) {
			break
		}
		time.Sleep(time.Second)
	}
	time.Sleep(10 * time.Second) // let the jobs load and warm up
	if err := printCluster(ctx, c); err != nil {
		return err
	}
	fmt.Printf("\nkubeconfig: %s\n  kubectl --kubeconfig %s get pods -o wide\n  curl -s %s | jq .\n", c.Kubeconfig, c.Kubeconfig, c.InspectURL())
	if exit {
		return nil
	}
	fmt.Println("\nthe cluster stays up; Ctrl-C tears it down")
	<-ctx.Done()
	return nil
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
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("train-%02d", i), Labels: map[string]string{"app": "train"}},
		Spec: corev1.PodSpec{SchedulerName: cluster.SchedulerName, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{
			Name: "train", Image: "gpupack/train:sim", Args: []string{"--steps=1000000", "--step-time=250ms", fmt.Sprintf("--seed=%d", i)},
			Resources: corev1.ResourceRequirements{Limits: lim, Requests: lim.DeepCopy()},
		}}},
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

// printCluster prints, per node and card, the allocation the extender
// records and the use the simulated cards report, then the pending pods.
func printCluster(ctx context.Context, c *cluster.Cluster) error {
	resp, err := http.Get(c.InspectURL())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var inspect extender.InspectResult
	if err := json.NewDecoder(resp.Body).Decode(&inspect); err != nil {
		return fmt.Errorf("reading the extender's inspect: %w", err)
	}
	nodes := inspect.Nodes
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nNODE\tCARD\tMODEL\tALLOCATED/TOTAL (GiB)\tUSED (GiB)\tSM UTIL\tPODS")
	var alloc, total int64
	for _, n := range nodes {
		state, err := c.Nodes[n.Name].Store.Read()
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
		alloc += n.Allocated
		total += n.Total
	}
	fmt.Fprintf(w, "TOTAL\t\t\t%d/%d (%d%%)\t\t\t\n", alloc, total, 100*alloc/max(total, 1))
	w.Flush()
	list, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range list.Items {
		if p.Spec.NodeName == "" {
			fmt.Printf("pending: %s (%s)\n", p.Name, reason(p))
		}
	}
	return nil
}

func reason(p corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Message
		}
	}
	return "not scheduled yet"
}
