package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/test/cluster"
	"github.com/gpupack/gpupack/test/e2e/e2eutil"
)

// ctr is a container: GPU memory (GiB), GPU count, and the simulated job's
// flags.
type ctr struct {
	mem, count int64
	args       []string
}

// longJob keeps its share until the pod is deleted; shortJob ends in about
// a second.
var (
	longJob  = []string{"--steps=100000", "--step-time=200ms"}
	shortJob = []string{"--steps=10", "--step-time=100ms"}
)

func gpuPod(ns, name string, cs ...ctr) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{SchedulerName: cluster.SchedulerName, RestartPolicy: corev1.RestartPolicyNever},
	}
	for i, c := range cs {
		lim := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
		if c.mem > 0 {
			lim[contract.ResourceGPUMem] = *resource.NewQuantity(c.mem, resource.DecimalSI)
		}
		if c.count > 0 {
			lim[contract.ResourceGPUCount] = *resource.NewQuantity(c.count, resource.DecimalSI)
		}
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name: fmt.Sprintf("c%d", i), Image: "gpupack/train:sim", Args: c.args,
			Resources: corev1.ResourceRequirements{Limits: lim, Requests: lim.DeepCopy()},
		})
	}
	return pod
}

// namespace makes a namespace for one test and deletes its pods after it.
func namespace(t *testing.T) string {
	t.Helper()
	return e2eutil.Namespace(t, client)
}

func create(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	e2eutil.Create(t, client, pod)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	e2eutil.WaitFor(t, timeout, what, cond)
}

// waitPhase waits for a pod to reach a phase and returns it.
func waitPhase(t *testing.T, ns, name string, phase corev1.PodPhase, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, timeout, fmt.Sprintf("pod %s/%s to be %s", ns, name, phase), func() (bool, error) {
		var err error
		pod, err = client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, err
		}
		if err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed && phase != corev1.PodFailed {
			t.Fatalf("pod %s/%s failed: %s %s", ns, name, pod.Status.Reason, pod.Status.Message)
		}
		return pod.Status.Phase == phase, nil
	})
	return pod
}

func allocation(t *testing.T, pod *corev1.Pod) contract.Allocation {
	t.Helper()
	return e2eutil.Allocation(t, pod)
}

// checkNoOvercommit checks every active pod's recorded shares against the
// cards' sizes, node by node, and that each bound GPU pod holds exactly one
// placement (on its own node). Device plugins rewrite the records of pods
// that swapped cards a moment after the kubelet allocates, one patch per
// pod, so the check allows them 30 seconds to agree.
func checkNoOvercommit(t *testing.T) {
	t.Helper()
	var problems []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		problems = overcommit(t)
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func overcommit(t *testing.T) []string {
	t.Helper()
	var problems []string
	ctx := context.Background()
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	size := map[string]map[int]int64{} // node -> card -> GiB
	for _, n := range nodes.Items {
		inv, err := contract.ParseInventory(n.Annotations[contract.AnnotationInventory])
		if err != nil {
			continue
		}
		size[n.Name] = map[int]int64{}
		for _, c := range inv.Cards {
			size[n.Name][c.Index] = contract.GiB.FromMiB(c.MemoryMiB)
		}
	}
	pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]map[int]int64{}
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if p.Spec.SchedulerName != cluster.SchedulerName {
			continue
		}
		if got := p.Annotations[contract.AnnotationNode]; got != p.Spec.NodeName {
			problems = append(problems, fmt.Sprintf("pod %s/%s is bound to %s but its decision names %q", p.Namespace, p.Name, p.Spec.NodeName, got))
		}
		a, err := contract.ParseAllocation(p.Annotations[contract.AnnotationAllocation])
		if err != nil {
			problems = append(problems, fmt.Sprintf("pod %s/%s bound without an allocation: %v", p.Namespace, p.Name, err))
			continue
		}
		if node := local.Nodes[p.Spec.NodeName]; node != nil && p.Status.Phase == corev1.PodRunning {
			if held, ok := node.Held(&p); ok && held.String() != a.String() {
				problems = append(problems, fmt.Sprintf("pod %s/%s records %s but holds %s", p.Namespace, p.Name, a, held))
			}
		}
		if used[p.Spec.NodeName] == nil {
			used[p.Spec.NodeName] = map[int]int64{}
		}
		for c, u := range a.PerCard() {
			if _, ok := size[p.Spec.NodeName][c]; !ok {
				problems = append(problems, fmt.Sprintf("pod %s/%s holds card %d, which node %s does not have", p.Namespace, p.Name, c, p.Spec.NodeName))
			}
			used[p.Spec.NodeName][c] += u
		}
	}
	for node, cards := range used {
		for c, u := range cards {
			if u > size[node][c] {
				problems = append(problems, fmt.Sprintf("node %s card %d over-committed: %d/%d GiB", node, c, u, size[node][c]))
			}
		}
	}
	return problems
}
