package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/test/cluster"
	"github.com/gpupack/gpupack/test/e2e/e2eutil"
)

// ctr is a training container: GPU memory (GiB), GPU count and the job's
// flags.
type ctr struct {
	mem, count int64
	args       []string
}

// longJob keeps its share until the pod is deleted.
var longJob = []string{"--steps=100000", "--step-time=200ms"}

// trainPod is a pod of gpupack-train containers, as a user writes one:
// the gpupack scheduler, the image, GPU memory in the limits.
func trainPod(ns, name string, cs ...ctr) *corev1.Pod {
	grace := int64(2)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{SchedulerName: cluster.SchedulerName, RestartPolicy: corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace},
	}
	for i, c := range cs {
		lim := corev1.ResourceList{}
		if c.mem > 0 {
			lim[contract.ResourceGPUMem] = *resource.NewQuantity(c.mem, resource.DecimalSI)
		}
		if c.count > 0 {
			lim[contract.ResourceGPUCount] = *resource.NewQuantity(c.count, resource.DecimalSI)
		}
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name: fmt.Sprintf("c%d", i), Image: cluster.TrainImage, ImagePullPolicy: corev1.PullNever,
			Args: append([]string{"--name=" + name}, c.args...), Resources: corev1.ResourceRequirements{Limits: lim},
		})
	}
	return pod
}

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

// waitRunning waits for a pod to run (all its containers started) and
// returns it; a pod that fails ends the test with its reason.
func waitRunning(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, 2*time.Minute, fmt.Sprintf("pod %s/%s to run", ns, name), func() (bool, error) {
		var err error
		if pod, err = client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			t.Fatalf("pod %s/%s ended (%s): %s %s %s", ns, name, pod.Status.Phase, pod.Status.Reason, pod.Status.Message, describe(pod))
		}
		if pod.Status.Phase != corev1.PodRunning {
			return false, fmt.Errorf("phase %s %s", pod.Status.Phase, describe(pod))
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Running == nil {
				return false, fmt.Errorf("container %s not running", cs.Name)
			}
		}
		return true, nil
	})
	return pod
}

// describe is what a pod's containers wait for, and its events.
func describe(pod *corev1.Pod) string {
	var b strings.Builder
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			fmt.Fprintf(&b, " [%s waiting: %s %s]", cs.Name, w.Reason, w.Message)
		}
		if e := cs.State.Terminated; e != nil {
			fmt.Fprintf(&b, " [%s terminated: %s %s exit %d]", cs.Name, e.Reason, e.Message, e.ExitCode)
		}
	}
	evs, err := client.CoreV1().Events(pod.Namespace).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name})
	if err == nil {
		for _, e := range evs.Items {
			fmt.Fprintf(&b, " {%s %s: %s}", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}

func allocation(t *testing.T, pod *corev1.Pod) contract.Allocation {
	t.Helper()
	return e2eutil.Allocation(t, pod)
}

// containerEnv is the environment of a container's main process, read
// from the machine's /proc: its process is found through the container's
// cgroup (the node's cgroup, kubepods, the pod's, then containerd's id).
func containerEnv(t *testing.T, pod *corev1.Pod, container string) map[string]string {
	t.Helper()
	var id string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == container {
			_, id, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	if id == "" {
		t.Fatalf("pod %s: container %s has no id yet", pod.Name, container)
	}
	// A container reported running may still be runc's init, which has
	// runc's environment until it executes the container's command.
	var b []byte
	waitFor(t, 10*time.Second, fmt.Sprintf("pod %s container %s (%s) to run its command", pod.Name, container, id), func() (bool, error) {
		pids := node.ContainerPIDs(string(pod.UID), id)
		if len(pids) == 0 {
			return false, fmt.Errorf("no process in its cgroup")
		}
		proc := filepath.Join("/proc", strconv.Itoa(pids[0]))
		comm, err := os.ReadFile(filepath.Join(proc, "comm"))
		if err != nil || strings.HasPrefix(string(comm), "runc") {
			return false, err
		}
		b, err = os.ReadFile(filepath.Join(proc, "environ"))
		return err == nil, err
	})
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// podResources lists what the kubelet says each container holds, by
// namespace/pod/container: device ids of aliyun.com/gpu-mem.
func podResources(t *testing.T) map[string][]string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+node.PodResourcesSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := podresourcesapi.NewPodResourcesListerClient(conn).List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		t.Fatalf("the kubelet's PodResources List: %v", err)
	}
	out := map[string][]string{}
	for _, p := range resp.PodResources {
		for _, c := range p.Containers {
			for _, d := range c.Devices {
				if d.ResourceName == string(contract.ResourceGPUMem) {
					key := p.Namespace + "/" + p.Name + "/" + c.Name
					out[key] = append(out[key], d.DeviceIds...)
				}
			}
		}
	}
	return out
}

// inventory is the node's cards as its device plugin published them: UUID
// -> index.
func inventory(t *testing.T) map[string]int {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := contract.ParseInventory(n.Annotations[contract.AnnotationInventory])
	if err != nil {
		t.Fatalf("node %s inventory: %v", nodeName, err)
	}
	out := map[string]int{}
	for _, c := range inv.Cards {
		out[c.UUID] = c.Index
	}
	return out
}

// pluginPod is the running device plugin pod of the node.
func pluginPod(t *testing.T) *corev1.Pod {
	t.Helper()
	pods, err := client.CoreV1().Pods(chartNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=gpupack-device-plugin"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.Spec.NodeName == nodeName && p.DeletionTimestamp == nil && ready(p) {
			return p
		}
	}
	return nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// pluginMetrics reads the device plugin pod's /metrics through the API
// server's pod proxy, as Prometheus's families.
func pluginMetrics(pod *corev1.Pod) (map[string]*dto.MetricFamily, error) {
	body, err := client.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, "9445", "metrics", nil).DoRaw(context.Background())
	if err != nil {
		return nil, err
	}
	return e2eutil.ParseMetrics(body)
}

// gpuMemAllocatable is the node's allocatable aliyun.com/gpu-mem.
func gpuMemAllocatable(t *testing.T) int64 {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := n.Status.Allocatable[contract.ResourceGPUMem]
	return q.Value()
}
