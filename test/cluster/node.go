package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/nvml"
)

// NodeSpec is a simulated GPU node: a name and a mock NVML preset.
type NodeSpec struct {
	Name   string
	Preset string
}

// Node is a running simulated node.
type Node struct {
	Name string
	// Store is the node's simulated cards: inject faults here.
	Store *mock.Store
	// MetricsURL is the device plugin's /metrics.
	MetricsURL string
	kubelet    *kubelet
	cancel     context.CancelFunc
	done       chan struct{}
}

// RestartKubelet restarts the node's kubelet registration server, as a
// kubelet restart does: the plugin must register again.
func (n *Node) RestartKubelet() error { return n.kubelet.restart() }

// startNode creates the Node object and runs the device plugin and test
// kubelet of a simulated node until Stop. Beside real nodes (mixed), it is
// tainted with SimulatedTaint and renews its node lease, as kube-controller-
// manager then watches nodes' health.
func startNode(ctx context.Context, rc clientFactory, b Binaries, dir string, spec NodeSpec, mixed bool) (*Node, error) {
	client, err := rc("node/" + spec.Name)
	if err != nil {
		return nil, err
	}
	nodeDir := filepath.Join(dir, spec.Name)
	if err := os.MkdirAll(filepath.Join(nodeDir, "proc"), 0o755); err != nil {
		return nil, err
	}
	store, err := mock.Prepare(spec.Preset, filepath.Join(nodeDir, "nvml.json"), spec.Name)
	if err != nil {
		return nil, err
	}
	if err := createNode(ctx, client, spec.Name, mixed); err != nil {
		return nil, err
	}
	lib, err := nvml.New(mock.New(store))
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	log := klog.FromContext(ctx).WithValues("node", spec.Name)
	n := &Node{Name: spec.Name, Store: store, MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), cancel: cancel, done: make(chan struct{})}
	n.kubelet = &kubelet{
		node: spec.Name, client: client, log: log.WithName("kubelet"),
		pluginDir: filepath.Join(nodeDir, "dp"), procRoot: filepath.Join(nodeDir, "proc"),
		podResourcesSocket: filepath.Join(nodeDir, "pr.sock"), train: b.Train, state: store.Path(),
		logDir: filepath.Join(nodeDir, "logs"),
	}
	if err := os.MkdirAll(n.kubelet.logDir, 0o755); err != nil {
		cancel()
		return nil, err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", spec.Name).String()
	}))
	podInformer := factory.Core().V1().Pods().Informer()
	if err := n.kubelet.run(ctx, podInformer); err != nil {
		cancel()
		return nil, err
	}
	factory.Start(ctx.Done())
	leaseDone := make(chan struct{})
	go func() {
		defer close(leaseDone)
		if mixed {
			renewLease(ctx, client, spec.Name, log)
		}
	}()
	pluginDone := make(chan struct{})
	go func() {
		defer close(pluginDone)
		err := deviceplugin.RunDaemon(klog.NewContext(ctx, log.WithName("device-plugin")), deviceplugin.DaemonConfig{
			Options: deviceplugin.Options{
				NodeName: spec.Name, Dir: n.kubelet.pluginDir, Unit: contract.GiB, ProcRoot: n.kubelet.procRoot,
				Health:             nvml.HealthOptions{Poll: 200 * time.Millisecond, Quiet: 3 * time.Second},
				PodResourcesSocket: n.kubelet.podResourcesSocket,
			},
			MetricsAddr:       fmt.Sprintf("127.0.0.1:%d", port),
			UsageInterval:     500 * time.Millisecond,
			ReconcileInterval: 2 * time.Second,
		}, lib, client)
		if err != nil && ctx.Err() == nil {
			log.Error(err, "Device plugin stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		n.kubelet.wait()
		<-pluginDone
		<-leaseDone
		factory.Shutdown()
		close(n.done)
	}()
	return n, nil
}

// Stop ends the node's plugin and kubelet.
func (n *Node) Stop() {
	n.cancel()
	<-n.done
}

// createNode registers a Ready node with CPU, memory and pod capacity
// (tainted with SimulatedTaint when tainted).
func createNode(ctx context.Context, client kubernetes.Interface, name string, tainted bool) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("96"), corev1.ResourceMemory: resource.MustParse("1Ti"), corev1.ResourcePods: resource.MustParse("110"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			contract.LabelGPUShare: "true", corev1.LabelHostname: name, corev1.LabelOSStable: "linux",
		}},
	}
	if tainted {
		node.Spec.Taints = []corev1.Taint{SimulatedTaint}
	}
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity.DeepCopy(),
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "simulated by gpupack's test kubelet", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: name}},
	}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("reporting node %s ready: %w", name, err)
	}
	return nil
}

// Held is what the kubelet gave the pod's GPU containers, by container
// index and card index; false when the pod holds nothing on this node.
func (n *Node) Held(pod *corev1.Pod) (contract.Allocation, bool) {
	state, err := n.Store.Read()
	if err != nil {
		return nil, false
	}
	card := map[string]int{}
	for i, c := range state.Cards {
		card[c.UUID] = i
	}
	k := n.kubelet
	k.mu.Lock()
	defer k.mu.Unlock()
	rp := k.pods[pod.UID]
	if rp == nil || len(rp.devices) == 0 {
		return nil, false
	}
	out := contract.Allocation{}
	for i, c := range pod.Spec.Containers {
		for _, id := range rp.devices[c.Name] {
			uuid, _, ok := strings.Cut(id, "-_-")
			if !ok {
				continue
			}
			if out[i] == nil {
				out[i] = map[int]int64{}
			}
			out[i][card[uuid]]++
		}
	}
	return out, true
}

// renewLease keeps the node's lease in kube-node-lease fresh, as a kubelet
// does every 10 s, until ctx ends.
func renewLease(ctx context.Context, client kubernetes.Interface, node string, log klog.Logger) {
	leases := client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, node, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: corev1.NamespaceNodeLease},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: ptr(int32(40)), RenewTime: &now},
			}, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			log.Error(err, "Renewing the node's lease")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
