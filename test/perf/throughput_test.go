// Package perf measures scheduling throughput on the local cluster's real
// kube-scheduler, with and without the gpupack extender. It holds
// benchmarks only: go test -run '^$' -bench Throughput -benchtime 1x ./perf/
package perf

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/test/cluster"
)

const (
	nodes = 1000
	pods  = 2000
)

// BenchmarkThroughput creates 1,000 nodes of 8 x A100-80GB and schedules
// 2,000 GPU pods through kube-scheduler, once with the gpupack profile
// (extender filter, prioritize and bind) and once with kube-scheduler alone
// treating aliyun.com/gpu-mem as a plain extended resource, and reports
// pods per second for both and their ratio.
func BenchmarkThroughput(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "gpp")
	if err != nil {
		b.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Options{Dir: dir, Out: os.Stderr})
	if err != nil {
		b.Fatalf("%v (logs in %s)", err, dir)
	}
	defer c.Down()
	if err := createNodes(ctx, c.Client); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second) // informers catch up with the nodes
	var rates [2]float64
	for i, sched := range []string{cluster.SchedulerName, corev1.DefaultSchedulerName} {
		ns := fmt.Sprintf("bench-%d", i)
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		elapsed, err := schedule(ctx, c.Client, ns, sched)
		if err != nil {
			b.Fatalf("%s: %v (logs in %s)", sched, err, dir)
		}
		rates[i] = pods / elapsed.Seconds()
		b.Logf("%s: %d pods bound on %d nodes in %s: %.1f pods/s", sched, pods, nodes, elapsed.Round(time.Millisecond), rates[i])
		// Free the nodes for the next run.
		zero := int64(0)
		if err := c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(5 * time.Second)
	}
	b.ReportMetric(rates[0], "gpupack-pods/s")
	b.ReportMetric(rates[1], "default-pods/s")
	b.ReportMetric(rates[0]/rates[1], "ratio")
}

func createNodes(ctx context.Context, client kubernetes.Interface) error {
	inv := &contract.Inventory{}
	for i := range 8 {
		inv.Cards = append(inv.Cards, contract.Card{Index: i, UUID: fmt.Sprintf("GPU-bench-%d", i), Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, Healthy: true})
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("96"), corev1.ResourceMemory: resource.MustParse("1Ti"), corev1.ResourcePods: resource.MustParse("110"),
		contract.ResourceGPUMem: resource.MustParse("640"), contract.ResourceGPUCount: resource.MustParse("8"),
	}
	return parallel(nodes, 50, func(i int) error {
		name := fmt.Sprintf("bench-%04d", i)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:      map[string]string{contract.LabelGPUShare: "true", corev1.LabelHostname: name},
			Annotations: map[string]string{contract.AnnotationInventory: inv.String()},
		}}
		created, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		created.Status = corev1.NodeStatus{Capacity: capacity, Allocatable: capacity.DeepCopy(),
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}}}
		_, err = client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	})
}

// schedule creates the pods and waits until every one is bound.
func schedule(ctx context.Context, client kubernetes.Interface, ns, scheduler string) (time.Duration, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := make([]int64, pods)
	for i := range sizes {
		sizes[i] = 1 + rng.Int64N(16)
	}
	start := time.Now()
	err := parallel(pods, 50, func(i int) error {
		lim := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), contract.ResourceGPUMem: *resource.NewQuantity(sizes[i], resource.DecimalSI)}
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p-" + strconv.Itoa(i), Namespace: ns},
			Spec: corev1.PodSpec{SchedulerName: scheduler, Containers: []corev1.Container{{
				Name: "c", Image: "train", Resources: corev1.ResourceRequirements{Limits: lim, Requests: lim.DeepCopy()},
			}}},
		}
		_, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(20 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return 0, err
		}
		bound := 0
		for _, p := range list.Items {
			if p.Spec.NodeName != "" {
				bound++
			}
		}
		if bound == pods {
			return time.Since(start), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("not every pod was bound within 20 minutes")
}

func parallel(n, workers int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
