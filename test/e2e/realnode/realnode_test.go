package realnode

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/test/cluster"
	"github.com/gpupack/gpupack/test/e2e/e2eutil"
)

// The tests run in this file's order on one installation: each leaves the
// node as it found it, except for what it tests (a restart, a deletion).

// TestChartInstalled: after helm install, the scheduler's pods (kube-
// scheduler and the extender) and the device plugin's are Ready by their
// probes, and the node advertises its cards' memory from the plugin pod.
func TestChartInstalled(t *testing.T) {
	needNode(t)
	ctx := context.Background()
	waitFor(t, 3*time.Minute, "the chart's pods to be Ready", func() (bool, error) {
		pods, err := client.CoreV1().Pods(chartNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=gpupack"})
		if err != nil {
			return false, err
		}
		byName := map[string]int{}
		for i := range pods.Items {
			if p := &pods.Items[i]; ready(p) {
				byName[p.Labels["app.kubernetes.io/name"]]++
			}
		}
		if byName[cluster.SchedulerName] != 2 || byName["gpupack-device-plugin"] != 1 {
			return false, fmt.Errorf("ready: %v", byName)
		}
		return true, nil
	})
	waitFor(t, time.Minute, "the node to advertise its cards' memory", func() (bool, error) {
		got := gpuMemAllocatable(t)
		return got == nodeCards*cardGiB, fmt.Errorf("allocatable %s: %d", contract.ResourceGPUMem, got)
	})
	t.Logf("helm install -> scheduler and device plugin Ready, %d GiB advertised: %s", nodeCards*cardGiB, time.Since(installed).Round(100*time.Millisecond))

	// The node's labels say what the plugin found, so that a nodeSelector
	// on them selects it: the API server's label selector is the judge.
	n, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := contract.ParseInventory(n.Annotations[contract.AnnotationInventory])
	if err != nil || len(inv.Cards) == 0 {
		t.Fatalf("node %s inventory: %v, %d cards", nodeName, err, len(inv.Cards))
	}
	want := labels.Set{
		contract.LabelGPUProduct:        deviceplugin.ModelLabelValue(inv.Cards[0].Model),
		contract.LabelGPUCount:          strconv.Itoa(nodeCards),
		contract.LabelGPUMemory:         strconv.Itoa(cardGiB * 1024),
		contract.LabelDriverVersion:     mock.DriverVersion,
		contract.LabelCUDADriverVersion: fmt.Sprintf("%d.%d", mock.CUDADriverVersion/1000, mock.CUDADriverVersion%1000/10),
	}
	sel := labels.SelectorFromSet(want).String() + ",!" + contract.LabelGPUMixed
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 1 || nodes.Items[0].Name != nodeName {
		t.Errorf("nodes selected by %s: %d, want %s alone; its labels: %v", sel, len(nodes.Items), nodeName, n.Labels)
	}
}

// TestTrainingContainers: GPU pods placed by the chart's scheduler run as
// containers; each container's environment (read from its process) names
// the cards and the share the extender chose, and the kubelet's
// PodResources agrees with the pods' annotations.
func TestTrainingContainers(t *testing.T) {
	needNode(t)
	ns := namespace(t)
	pods := []*corev1.Pod{
		trainPod(ns, "one-share", ctr{mem: 20, args: longJob}),
		trainPod(ns, "two-cards", ctr{mem: 32, count: 2, args: longJob}),
		trainPod(ns, "two-containers", ctr{mem: 8, args: longJob}, ctr{mem: 12, args: longJob}),
	}
	for _, p := range pods {
		create(t, p)
	}
	index := inventory(t)
	uuid := map[int]string{}
	for u, i := range index {
		uuid[i] = u
	}
	for i, p := range pods {
		got := waitRunning(t, ns, p.Name)
		if i == 0 {
			t.Logf("helm install -> first GPU pod Running: %s", time.Since(installed).Round(100*time.Millisecond))
		}
		a := allocation(t, got)
		for ci, c := range got.Spec.Containers {
			env := containerEnv(t, got, c.Name)
			cards := a[ci]
			var idx, uuids []string
			var share int64
			for card := 0; card < nodeCards; card++ {
				if n, ok := cards[card]; ok {
					idx = append(idx, strconv.Itoa(card))
					uuids = append(uuids, uuid[card])
					share = n
				}
			}
			want := map[string]string{
				contract.EnvIndex:          strings.Join(idx, ","),
				contract.EnvVisibleDevices: strings.Join(uuids, ","),
				"GPUPACK_MEMORY_LIMIT_MIB": strconv.FormatInt(share*1024, 10),
			}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("pod %s container %s: %s=%q in its process's environment, want %q (allocation %s)", p.Name, c.Name, k, env[k], v, a)
				}
			}
		}
	}
	checkPodResources(t, ns)
}

// checkPodResources compares what the kubelet says each container of ns
// holds with what the pod's allocation annotation records.
func checkPodResources(t *testing.T, ns string) {
	t.Helper()
	index := inventory(t)
	var last string
	waitFor(t, 30*time.Second, "PodResources to agree with the annotations", func() (bool, error) {
		held := podResources(t)
		pods, err := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		var diffs []string
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase != corev1.PodRunning {
				continue
			}
			a := allocation(t, p)
			for ci, c := range p.Spec.Containers {
				got, err := deviceplugin.PerCard(held[ns+"/"+p.Name+"/"+c.Name], index)
				if err != nil {
					t.Fatalf("PodResources of %s/%s: %v", p.Name, c.Name, err)
				}
				if fmt.Sprint(got) != fmt.Sprint(map[int]int64(a[ci])) {
					diffs = append(diffs, fmt.Sprintf("%s/%s holds %v, annotated %v", p.Name, c.Name, got, a[ci]))
				}
			}
		}
		last = strings.Join(diffs, "; ")
		return len(diffs) == 0, fmt.Errorf("%s", last)
	})
}

// TestOverShareThroughCgroups: a container that takes more than its share
// is found by its host PID -> cgroup -> pod and containerd's container id,
// reported in the plugin's metrics and recorded as an event on its pod.
func TestOverShareThroughCgroups(t *testing.T) {
	needNode(t)
	ns := namespace(t)
	create(t, trainPod(ns, "greedy", ctr{mem: 10, args: []string{"--steps=100000", "--step-time=200ms", "--exceed=1.5", "--exceed-from=5"}}))
	create(t, trainPod(ns, "polite", ctr{mem: 10, args: longJob}))
	waitRunning(t, ns, "greedy")
	waitRunning(t, ns, "polite")
	waitFor(t, time.Minute, "the plugin to report greedy over its share", func() (bool, error) {
		p := pluginPod(t)
		if p == nil {
			return false, fmt.Errorf("no ready device plugin pod")
		}
		m, err := pluginMetrics(p)
		if err != nil {
			return false, err
		}
		over, ok := e2eutil.MetricValue(m, "gpupack_device_plugin_pod_memory_over_share", map[string]string{"namespace": ns, "pod": "greedy", "container": "c0"})
		if !ok || over != 1 {
			return false, fmt.Errorf("over_share for greedy/c0: %v (found %v)", over, ok)
		}
		if v, ok := e2eutil.MetricValue(m, "gpupack_device_plugin_pod_memory_over_share", map[string]string{"namespace": ns, "pod": "polite", "container": "c0"}); !ok || v != 0 {
			return false, fmt.Errorf("polite/c0 over_share %v (found %v): want 0", v, ok)
		}
		return true, nil
	})
	waitFor(t, time.Minute, "a GPUMemoryOverShare event on greedy", func() (bool, error) {
		evs, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=greedy,reason=GPUMemoryOverShare"})
		return err == nil && len(evs.Items) > 0, err
	})
}

// TestInspectLive: kubectl inspect gpushare -d shows the memory in use on
// each card, read from the device plugin pod through the API server.
func TestInspectLive(t *testing.T) {
	needNode(t)
	ns := namespace(t)
	create(t, trainPod(ns, "busy", ctr{mem: 40, args: []string{"--steps=100000", "--step-time=200ms", "--use=0.5"}}))
	pod := waitRunning(t, ns, "busy")
	var card int
	for c := range allocation(t, pod)[0] {
		card = c
	}
	var out []byte
	waitFor(t, time.Minute, "kubectl inspect gpushare -d to show the use of card "+strconv.Itoa(card), func() (bool, error) {
		var err error
		out, err = exec.Command(local.InspectBinary(), "--kubeconfig", local.Kubeconfig, "-d", nodeName).CombinedOutput()
		if err != nil {
			return false, fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			// GPU MODEL... HEALTH ALLOCATED/TOTAL USED(GiB) UTIL: the card's
			// row; the job holds half its 40 GiB.
			if len(f) >= 5 && f[0] == strconv.Itoa(card) && strings.HasPrefix(f[len(f)-3], "40/") {
				used, err := strconv.ParseFloat(f[len(f)-2], 64)
				return err == nil && used == 20, fmt.Errorf("card %d row %q", card, line)
			}
		}
		return false, fmt.Errorf("no row for card %d", card)
	})
	t.Logf("kubectl inspect gpushare -d %s:\n%s", nodeName, out)
}

// TestAllocateRefused: a pod that skips the extender (bound by hand) asks
// the plugin for memory nobody decided; the kubelet's admission fails it
// with the plugin's reason, and nothing else on the node moves.
func TestAllocateRefused(t *testing.T) {
	needNode(t)
	ns := namespace(t)
	create(t, trainPod(ns, "bystander", ctr{mem: 8, args: longJob}))
	before := waitRunning(t, ns, "bystander")
	rogue := trainPod(ns, "rogue", ctr{mem: 8, args: longJob})
	rogue.Spec.SchedulerName = ""
	rogue.Spec.NodeName = nodeName
	create(t, rogue)
	var got *corev1.Pod
	waitFor(t, time.Minute, "the kubelet to refuse rogue", func() (bool, error) {
		var err error
		got, err = client.CoreV1().Pods(ns).Get(context.Background(), "rogue", metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodFailed, err
	})
	if got.Status.Reason != "UnexpectedAdmissionError" || !strings.Contains(got.Status.Message, "Allocate failed") || !strings.Contains(got.Status.Message, nodeName) {
		t.Errorf("rogue failed with %q: %q; want the kubelet's UnexpectedAdmissionError carrying the plugin's reason", got.Status.Reason, got.Status.Message)
	}
	t.Logf("rogue: %s: %s", got.Status.Reason, got.Status.Message)
	after := waitRunning(t, ns, "bystander")
	if b, a := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]; a.ContainerID != b.ContainerID || a.RestartCount != 0 {
		t.Errorf("bystander disturbed: container %s (restarts %d), was %s", a.ContainerID, a.RestartCount, b.ContainerID)
	}
	checkPodResources(t, ns)
}

// TestKubeletRestart: the real kubelet restarts; the plugin registers
// again, running containers keep their cards, new pods are served.
func TestKubeletRestart(t *testing.T) {
	needNode(t)
	ns := namespace(t)
	create(t, trainPod(ns, "before", ctr{mem: 24, args: longJob}))
	before := waitRunning(t, ns, "before")
	registrations := func() float64 {
		p := pluginPod(t)
		if p == nil {
			return -1
		}
		m, err := pluginMetrics(p)
		if err != nil {
			return -1
		}
		v, _ := e2eutil.MetricValue(m, "gpupack_device_plugin_registrations_total", nil)
		return v
	}
	var was float64
	waitFor(t, 30*time.Second, "the plugin's registration count", func() (bool, error) {
		was = registrations()
		return was >= 1, nil
	})
	if err := node.RestartKubelet(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the plugin to register again", func() (bool, error) {
		now := registrations()
		return now > was, fmt.Errorf("registrations %v, were %v", now, was)
	})
	waitFor(t, time.Minute, "the node to advertise its cards again", func() (bool, error) {
		return gpuMemAllocatable(t) == nodeCards*cardGiB, nil
	})
	after := waitRunning(t, ns, "before")
	if a, b := after.Status.ContainerStatuses[0], before.Status.ContainerStatuses[0]; a.ContainerID != b.ContainerID || a.RestartCount != 0 {
		t.Errorf("the running container changed across the kubelet's restart: %s (restarts %d), was %s", a.ContainerID, a.RestartCount, b.ContainerID)
	}
	if a, b := allocation(t, after).String(), allocation(t, before).String(); a != b {
		t.Errorf("the running pod's allocation changed: %s, was %s", a, b)
	}
	create(t, trainPod(ns, "after", ctr{mem: 24, args: longJob}))
	waitRunning(t, ns, "after")
	checkPodResources(t, ns)
}

// TestDevicePluginPodDeleted: the plugin's pod is deleted; the DaemonSet
// brings it back, and no share is lost: running pods keep their cards,
// the node its capacity, and new pods are served.
func TestDevicePluginPodDeleted(t *testing.T) {
	needNode(t)
	ns := namespace(t)
	create(t, trainPod(ns, "steady", ctr{mem: 30, count: 2, args: longJob}))
	before := waitRunning(t, ns, "steady")
	old := pluginPod(t)
	if old == nil {
		t.Fatal("no ready device plugin pod")
	}
	if err := client.CoreV1().Pods(chartNS).Delete(context.Background(), old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the DaemonSet's new plugin pod to be Ready", func() (bool, error) {
		p := pluginPod(t)
		return p != nil && p.UID != old.UID, nil
	})
	waitFor(t, time.Minute, "the node to advertise its cards", func() (bool, error) {
		return gpuMemAllocatable(t) == nodeCards*cardGiB, nil
	})
	after := waitRunning(t, ns, "steady")
	if a, b := allocation(t, after).String(), allocation(t, before).String(); a != b {
		t.Errorf("steady's allocation changed: %s, was %s", a, b)
	}
	create(t, trainPod(ns, "newcomer", ctr{mem: 16, args: longJob}))
	waitRunning(t, ns, "newcomer")
	checkPodResources(t, ns)
}
