package inspect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/gpupack/gpupack/contract"
)

// Source says where a node's cards were read from (contract.CardsOf).
const (
	// SourceInventory: the gpupack device plugin's inventory annotation.
	SourceInventory = contract.SourceInventory
	// SourceAllocatable: gpushare's device plugin (allocatable gpu-mem
	// split evenly over gpu-count cards; no model, no health).
	SourceAllocatable = contract.SourceAllocatable
)

// Cluster is every GPU node shown, in one memory unit.
type Cluster struct {
	Unit  contract.Unit
	Nodes []Node
}

// Node is one node of the pool.
type Node struct {
	Name, Address string
	// Source is SourceInventory, SourceAllocatable, or "" for a node
	// without cards (shown only when asked for by name, or when GPU pods
	// are bound to it).
	Source string
	// Problem says why what the node publishes of its cards was not used
	// (contract.CardsOf).
	Problem string
	Cards   []Card
	// Pending are bound pods whose cards are not known (yet): no
	// allocation annotation, or cards the node does not list.
	Pending []PodShare
}

// Card is one GPU of a node.
type Card struct {
	Index int
	UUID  string
	Model string
	// Healthy is nil where the device plugin publishes no health
	// (gpushare's).
	Healthy          *bool
	Total, Allocated int64
	// Pods holding a share of this card, by namespace and name.
	Pods []PodShare
	// Live is what the device plugin measures now, when known.
	Live *Live
}

// PodShare is the memory one pod holds on one card (all its containers).
type PodShare struct {
	Namespace, Name string
	Units           int64
}

// Live is a card's measured state.
type Live struct {
	// Utilization is the share of time the SMs were busy, 0..1.
	Utilization float64
	UsedBytes   int64
}

// Total is the node's GPU memory, in units.
func (n *Node) Total() int64 {
	var t int64
	for _, c := range n.Cards {
		t += c.Total
	}
	return t
}

// Allocated is the memory held on the node, pending pods included.
func (n *Node) Allocated() int64 {
	var a int64
	for _, c := range n.Cards {
		a += c.Allocated
	}
	for _, p := range n.Pending {
		a += p.Units
	}
	return a
}

// Totals sums the cluster's allocated and total memory.
func (c *Cluster) Totals() (allocated, total int64) {
	for i := range c.Nodes {
		allocated += c.Nodes[i].Allocated()
		total += c.Nodes[i].Total()
	}
	return allocated, total
}

// Options choose what Collect reads.
type Options struct {
	// Node limits the view to one node ("" for every GPU node).
	Node string
	// Unit is the cluster's memory unit; "" infers it from the nodes
	// (allocatable gpu-mem against the inventory's MiB), GiB if none tells.
	Unit contract.Unit
}

// ErrNotFound is returned when the named node does not exist.
var ErrNotFound = errors.New("node not found")

// Collect reads nodes and pods from the API server.
func Collect(ctx context.Context, client kubernetes.Interface, opts Options) (*Cluster, error) {
	var nodes []corev1.Node
	// Ended pods hold nothing: the API server leaves them out.
	running := fields.AndSelectors(
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)))
	podList := metav1.ListOptions{FieldSelector: running.String()}
	if opts.Node != "" {
		n, err := client.CoreV1().Nodes().Get(ctx, opts.Node, metav1.GetOptions{})
		if err != nil {
			if isNotFound(err) {
				return nil, fmt.Errorf("%w: %s", ErrNotFound, opts.Node)
			}
			return nil, fmt.Errorf("reading node %s: %w", opts.Node, err)
		}
		nodes = []corev1.Node{*n}
		podList.FieldSelector = fields.AndSelectors(running, fields.OneTermEqualSelector("spec.nodeName", opts.Node)).String()
	} else {
		list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing nodes: %w", err)
		}
		nodes = list.Items
	}
	pods, err := client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, podList)
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	unit := opts.Unit
	if unit == "" {
		unit = inferUnit(nodes)
	}
	c := &Cluster{Unit: unit}
	for i := range nodes {
		c.Nodes = append(c.Nodes, nodeOf(&nodes[i], unit))
	}
	sort.Slice(c.Nodes, func(i, j int) bool { return c.Nodes[i].Name < c.Nodes[j].Name })
	byName := map[string]*Node{}
	for i := range c.Nodes {
		byName[c.Nodes[i].Name] = &c.Nodes[i]
	}
	items := pods.Items
	sort.Slice(items, func(i, j int) bool {
		if items[i].Namespace != items[j].Namespace {
			return items[i].Namespace < items[j].Namespace
		}
		return items[i].Name < items[j].Name
	})
	for i := range items {
		pod := &items[i]
		if n := byName[pod.Spec.NodeName]; n != nil && holds(pod) {
			n.add(pod)
		}
	}
	if opts.Node == "" {
		// A GPU node is one with cards or with GPU pods, as the extender's
		// /inspect has it: a node whose cards cannot be read still shows
		// what its pods hold.
		c.Nodes = slices.DeleteFunc(c.Nodes, func(n Node) bool { return len(n.Cards) == 0 && len(n.Pending) == 0 })
	}
	return c, nil
}

func isNotFound(err error) bool {
	var s interface{ Status() metav1.Status }
	return errors.As(err, &s) && s.Status().Reason == metav1.StatusReasonNotFound
}

// holds reports whether a pod holds GPU memory: bound and not ended.
func holds(pod *corev1.Pod) bool {
	return pod.Spec.NodeName != "" && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// nodeOf reads a node's cards as the extender does (contract.CardsOf).
func nodeOf(node *corev1.Node, unit contract.Unit) Node {
	nc := contract.CardsOf(node, unit)
	n := Node{Name: node.Name, Address: address(node), Source: nc.Source, Problem: nc.Problem}
	for _, c := range nc.Cards {
		card := Card{Index: c.Index, UUID: c.UUID, Model: c.Model, Total: c.Total}
		if nc.Source == SourceInventory {
			healthy := c.Healthy
			card.Healthy = &healthy
		}
		n.Cards = append(n.Cards, card)
	}
	return n
}

func quantity(l corev1.ResourceList, name corev1.ResourceName) int64 {
	q, ok := l[name]
	if !ok {
		return 0
	}
	return q.Value()
}

// address is the node's internal IP (the first address otherwise).
func address(node *corev1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	if len(node.Status.Addresses) > 0 {
		return node.Status.Addresses[0].Address
	}
	return ""
}

// inferUnit compares a node's allocatable gpu-mem with its inventory: a
// count near the MiB total means MiB. GiB when no node tells.
func inferUnit(nodes []corev1.Node) contract.Unit {
	for i := range nodes {
		s, ok := nodes[i].Annotations[contract.AnnotationInventory]
		if !ok {
			continue
		}
		inv, err := contract.ParseInventory(s)
		if err != nil {
			continue
		}
		mem := quantity(nodes[i].Status.Allocatable, contract.ResourceGPUMem)
		if mem == 0 {
			mem = quantity(nodes[i].Status.Capacity, contract.ResourceGPUMem)
		}
		if mem == 0 {
			continue
		}
		var gib int64
		for _, c := range inv.Cards {
			gib += contract.GiB.FromMiB(c.MemoryMiB)
		}
		// A GiB node advertises about gib devices, a MiB node about 1,024
		// times more; the midpoint (in ratio) tells them apart.
		if mem > gib*32 {
			return contract.MiB
		}
		return contract.GiB
	}
	return contract.DefaultUnit
}

// add records a pod's shares on the node's cards.
func (n *Node) add(pod *corev1.Pod) {
	reqs, err := contract.PodRequests(pod)
	if err != nil {
		return // no GPU, or a request no scheduler would place
	}
	var total int64
	for _, r := range reqs {
		total += r.Mem
	}
	alloc := allocationOf(pod, reqs)
	if alloc == nil {
		n.Pending = append(n.Pending, PodShare{Namespace: pod.Namespace, Name: pod.Name, Units: total})
		return
	}
	per := alloc.PerCard()
	for _, idx := range alloc.Cards() {
		c := n.card(idx)
		if c == nil {
			n.Pending = append(n.Pending, PodShare{Namespace: pod.Namespace, Name: pod.Name, Units: per[idx]})
			continue
		}
		c.Allocated += per[idx]
		c.Pods = append(c.Pods, PodShare{Namespace: pod.Namespace, Name: pod.Name, Units: per[idx]})
	}
}

func (n *Node) card(index int) *Card {
	for i := range n.Cards {
		if n.Cards[i].Index == index {
			return &n.Cards[i]
		}
	}
	return nil
}

// allocationOf reads the cards a pod holds: gpupack's (and gpushare's)
// allocation annotation, else gpushare's card index for a one-card pod.
// nil when neither says.
func allocationOf(pod *corev1.Pod, reqs []contract.ContainerRequest) contract.Allocation {
	if s, ok := pod.Annotations[contract.AnnotationAllocation]; ok {
		if a, err := contract.ParseAllocation(s); err == nil {
			return a
		}
	}
	s, ok := pod.Annotations[contract.AnnotationIndex]
	if !ok || len(reqs) != 1 || reqs[0].Cards() != 1 || reqs[0].Whole() {
		return nil
	}
	idx, err := strconv.Atoi(s)
	if err != nil || idx < 0 {
		return nil
	}
	return contract.Allocation{reqs[0].Index: {idx: reqs[0].Mem}}
}
