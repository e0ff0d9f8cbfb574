package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/test/e2e/e2eutil"
)

// slowJob holds its share and writes the simulated state rarely, so 200 of
// them do not load the machine.
var slowJob = []string{"--steps=100000", "--step-time=5s"}

// TestBurstWithExtenderRestart: 200 pods arrive at once; the extender is
// killed mid-way and started again. Afterwards every pod runs, no card is
// over-committed and each pod holds exactly one placement.
func TestBurstWithExtenderRestart(t *testing.T) {
	ns := namespace(t)
	rng := rand.New(rand.NewPCG(7, 7))
	const n = 200
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p := gpuPod(ns, fmt.Sprintf("burst-%03d", i), ctr{mem: 1 + rng.Int64N(6), args: slowJob})
			if _, err := client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
				t.Error(err)
			}
		}()
		if i == n/4 {
			wg.Wait()
			// Let some bind, then crash the extender with binds in flight.
			waitFor(t, time.Minute, "some pods to bind", func() (bool, error) { return boundCount(ns) >= 20, nil })
			local.KillExtender()
			t.Logf("extender killed with %d pods bound", boundCount(ns))
			go func() {
				time.Sleep(2 * time.Second)
				if err := local.StartExtender(); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	waitFor(t, 5*time.Minute, "all 200 pods to run", func() (bool, error) {
		list, err := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
			if p.Status.Phase == corev1.PodFailed {
				t.Fatalf("pod %s failed: %s", p.Name, p.Status.Message)
			}
		}
		return running == n, nil
	})
	checkNoOvercommit(t)
}

// countPods counts the pods of ns that satisfy pred (0 when they cannot be
// listed).
func countPods(ns string, pred func(*corev1.Pod) bool) int {
	list, err := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return 0
	}
	c := 0
	for i := range list.Items {
		if pred(&list.Items[i]) {
			c++
		}
	}
	return c
}

func running(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }

func runningCount(ns string) int { return countPods(ns, running) }

func boundCount(ns string) int {
	return countPods(ns, func(p *corev1.Pod) bool { return p.Spec.NodeName != "" })
}

func onNode(p *corev1.Pod, node string) *corev1.Pod {
	p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	return p
}

// TestKubeletRestart: the plugin registers again and no share is lost.
func TestKubeletRestart(t *testing.T) {
	ns := namespace(t)
	create(t, onNode(gpuPod(ns, "before", ctr{mem: 30, args: longJob}), "mixed-0"))
	before := waitPhase(t, ns, "before", corev1.PodRunning, time.Minute)
	if err := local.Nodes["mixed-0"].RestartKubelet(); err != nil {
		t.Fatal(err)
	}
	// Only a registered plugin can serve the next pod's Allocate.
	create(t, onNode(gpuPod(ns, "after", ctr{mem: 30, args: longJob}), "mixed-0"))
	waitPhase(t, ns, "after", corev1.PodRunning, time.Minute)
	cur, err := client.CoreV1().Pods(ns).Get(context.Background(), "before", metav1.GetOptions{})
	if err != nil || cur.Status.Phase != corev1.PodRunning || cur.Annotations[contract.AnnotationAllocation] != before.Annotations[contract.AnnotationAllocation] {
		t.Errorf("the pod from before the restart changed: %v %s", err, cur.Annotations[contract.AnnotationAllocation])
	}
	checkNoOvercommit(t)
}

// TestCardFault: a card with a critical Xid is excluded, and used again
// once it recovers.
func TestCardFault(t *testing.T) {
	ns := namespace(t)
	node := local.Nodes["t4-0"]
	if err := node.Store.InjectXid(0, 79); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "card 0 of t4-0 to be reported unhealthy", func() (bool, error) { return cardHealthy("t4-0", 0) == "false", nil })
	for i := range 4 {
		create(t, onNode(gpuPod(ns, fmt.Sprintf("t%d", i), ctr{mem: 15, args: longJob}), "t4-0"))
	}
	waitFor(t, time.Minute, "three pods to run", func() (bool, error) { return runningCount(ns) == 3, nil })
	time.Sleep(2 * time.Second) // the fourth must not follow
	running := 0
	list, _ := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning {
			if allocation(t, &p).Cards()[0] == 0 {
				t.Errorf("pod %s placed on the faulty card", p.Name)
			}
			running++
		}
	}
	if running != 3 {
		t.Errorf("%d pods running while one card of four is faulty", running)
	}
	// Recovery: the card is quiet for the plugin's recovery period.
	waitFor(t, time.Minute, "card 0 of t4-0 to recover", func() (bool, error) { return cardHealthy("t4-0", 0) == "true", nil })
	waitFor(t, 2*time.Minute, "the fourth pod to run on the recovered card", func() (bool, error) { return runningCount(ns) == 4, nil })
	checkNoOvercommit(t)
}

// cardHealthy reads a card's health from the node's inventory.
func cardHealthy(node string, card int) string {
	n, err := client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	inv, err := contract.ParseInventory(n.Annotations[contract.AnnotationInventory])
	if err != nil {
		return ""
	}
	for _, c := range inv.Cards {
		if c.Index == card {
			return fmt.Sprint(c.Healthy)
		}
	}
	return ""
}

// TestOverShare: a job that takes more than its share shows in the node's
// metrics and gets an event.
func TestOverShare(t *testing.T) {
	ns := namespace(t)
	create(t, onNode(gpuPod(ns, "greedy", ctr{mem: 4, args: []string{"--steps=100000", "--step-time=100ms", "--exceed=1.5", "--exceed-from=5"}}), "a100-1"))
	pod := waitPhase(t, ns, "greedy", corev1.PodRunning, time.Minute)
	greedy := map[string]string{"container": "c0", "namespace": ns, "node": "a100-1", "pod": "greedy"}
	var over, used float64
	waitFor(t, time.Minute, "the overrun in the metrics", func() (bool, error) {
		resp, err := http.Get(local.Nodes["a100-1"].MetricsURL)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return false, err
		}
		m, err := e2eutil.ParseMetrics(b)
		if err != nil {
			return false, err
		}
		over, _ = e2eutil.MetricValue(m, "gpupack_device_plugin_pod_memory_over_share", greedy)
		used, _ = e2eutil.MetricValue(m, "gpupack_device_plugin_pod_memory_used_bytes", greedy)
		return over == 1 && used == 6<<30, fmt.Errorf("over_share %v, used %v bytes (want 1, 6 GiB)", over, used)
	})
	waitFor(t, 30*time.Second, "a GPUMemoryOverShare event", func() (bool, error) {
		evs, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.uid", string(pod.UID)).String(),
		})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "GPUMemoryOverShare" {
				return true, nil
			}
		}
		return false, nil
	})
}
