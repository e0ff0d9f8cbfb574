package cache

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
)

// Options configure a Cache.
type Options struct {
	// Unit is the cluster's memory unit of aliyun.com/gpu-mem.
	Unit contract.Unit
	// SigningKey verifies the signatures of decisions at rebuild. Empty: no
	// annotation is trusted as a decision (each is used only where it fits).
	SigningKey []byte
	// Coverage is the fraction of pods the workload estimate keeps (its
	// most frequent shapes); see policy.Policy.WorkloadCoverage.
	Coverage float64
	// Logger logs state changes that need an operator's eye.
	Logger klog.Logger
}

// Errors Assume returns; callers branch on them.
var (
	ErrUnknownNode   = errors.New("node is not known to the extender")
	ErrAlreadyPlaced = errors.New("pod is already placed")
	ErrDoesNotFit    = errors.New("allocation does not fit the node")
)

// Cache is safe for concurrent use.
type Cache struct {
	opts Options

	mu    sync.RWMutex
	nodes map[string]*nodeState
	pods  map[types.UID]*podState
	// learner counts every pod seen, by shape (the workload estimate of
	// fill and fgd); learned remembers which pods were counted.
	learner *policy.Learner
	learned map[types.UID]struct{}
	// gen changes whenever any node's cards do.
	gen uint64
}

// nodeState is one node: its cards as placement sees them, and its pods.
type nodeState struct {
	pn      policy.Node
	exists  bool   // the Node object is in the informer
	source  string // where the cards came from: inventory, allocatable
	problem string // why the inventory was not used, if it was not
	address string
	uuids   map[int]string
	cpuCap  int64
	memCap  int64
	pods    map[types.UID]*podState
}

// New returns an empty cache.
func New(opts Options) *Cache {
	if opts.Logger.GetSink() == nil {
		opts.Logger = klog.Background()
	}
	return &Cache{
		opts:    opts,
		nodes:   map[string]*nodeState{},
		pods:    map[types.UID]*podState{},
		learner: policy.NewLearner(opts.Coverage),
		learned: map[types.UID]struct{}{},
	}
}

// Unit is the memory unit the cache counts in.
func (c *Cache) Unit() contract.Unit { return c.opts.Unit }

func (c *Cache) node(name string) *nodeState {
	ns, ok := c.nodes[name]
	if !ok {
		ns = &nodeState{pn: policy.Node{Name: name}, pods: map[types.UID]*podState{}}
		c.nodes[name] = ns
	}
	return ns
}

// SetNode adds or updates a node from its Node object.
func (c *Cache) SetNode(node *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := c.node(node.Name)
	ns.exists = true
	ns.address = internalIP(node)
	ns.cpuCap = node.Status.Allocatable.Cpu().MilliValue()
	ns.memCap = node.Status.Allocatable.Memory().Value() >> 20
	_, hasCPU := node.Status.Allocatable[corev1.ResourceCPU]
	ns.pn.Resources = hasCPU
	cards, uuids, source, problem := cardsOf(node, c.opts.Unit)
	if problem != "" && problem != ns.problem {
		c.opts.Logger.Error(nil, "Ignoring the node's GPU inventory", "node", klog.KObj(node), "problem", problem, "fallback", source)
	}
	ns.pn.Cards, ns.uuids, ns.source, ns.problem = cards, uuids, source, problem
	c.reconcile(ns)
}

// DeleteNode forgets a node; its pods stay counted until they are deleted.
func (c *Cache) DeleteNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns, ok := c.nodes[name]
	if !ok {
		return
	}
	if len(ns.pods) == 0 {
		delete(c.nodes, name)
		return
	}
	ns.exists = false
	ns.pn.Cards = nil
	c.reconcile(ns)
}

// cardsOf reads a node's cards: from the gpupack inventory annotation, or,
// on a node still run by gpushare's device plugin, from its allocatable
// gpu-mem split evenly over gpu-count cards.
func cardsOf(node *corev1.Node, unit contract.Unit) (cards []policy.Card, uuids map[int]string, source, problem string) {
	if s, ok := node.Annotations[contract.AnnotationInventory]; ok {
		inv, err := contract.ParseInventory(s)
		if err == nil {
			uuids = map[int]string{}
			for _, ic := range inv.Cards {
				cards = append(cards, policy.Card{Index: ic.Index, Model: ic.Model, Total: unit.FromMiB(ic.MemoryMiB), Healthy: ic.Healthy})
				uuids[ic.Index] = ic.UUID
			}
			sort.Slice(cards, func(i, j int) bool { return cards[i].Index < cards[j].Index })
			return cards, uuids, "inventory", ""
		}
		problem = err.Error()
	}
	memQ, okMem := node.Status.Allocatable[contract.ResourceGPUMem]
	cntQ, okCnt := node.Status.Allocatable[contract.ResourceGPUCount]
	if !okMem || !okCnt || cntQ.Value() <= 0 || memQ.Value() <= 0 {
		return nil, nil, "", problem
	}
	n, mem := cntQ.Value(), memQ.Value()
	for i := int64(0); i < n; i++ {
		cards = append(cards, policy.Card{Index: int(i), Total: mem / n, Healthy: true})
	}
	return cards, nil, "allocatable", problem
}

func internalIP(node *corev1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// SetPod adds or updates a pod from the informer.
func (c *Cache) SetPod(pod *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if terminal(pod) {
		c.removePod(pod.UID)
		return
	}
	old, known := c.pods[pod.UID]
	if known && old.trusted() && old.node == pod.Spec.NodeName {
		// Our own decision stands: the informer caught up with the bind, or
		// the pod changed in a way that cannot move it (an edited annotation
		// does not move a running container to another card).
		old.bound = true
		return
	}
	fp := fingerprint(pod)
	if known && old.fingerprint == fp {
		return // a status update: nothing placement reads has changed
	}
	req, err := RequestOf(pod)
	if err != nil && !errors.Is(err, contract.ErrNoGPU) {
		// A bad request never gets a card: only its CPU and memory count.
		c.opts.Logger.V(4).Info("Pod asks for GPU in a way the extender rejects", "pod", klog.KObj(pod), "err", err)
	}
	c.learn(pod.UID, req)
	if pod.Spec.NodeName == "" {
		// Pending: only a bind in flight is counted; annotations never are.
		return
	}
	var was *nodeState
	if known {
		was = c.detach(pod.UID)
	}
	ps := &podState{
		uid: pod.UID, namespace: pod.Namespace, name: pod.Name, node: pod.Spec.NodeName,
		created: pod.CreationTimestamp.UnixNano(), req: req, bound: true, fingerprint: fp,
	}
	if len(req.Containers) > 0 {
		claim, signed, err := claimOf(pod, req, c.opts.SigningKey)
		switch {
		case err != nil:
			c.opts.Logger.V(2).Info("Bound GPU pod has no usable allocation; placing it where it fits", "pod", klog.KObj(pod), "node", pod.Spec.NodeName, "err", err)
		case signed:
			ps.trust, ps.alloc = Signed, claim
		default:
			ps.claim = claim
		}
	}
	c.pods[pod.UID] = ps
	ns := c.node(ps.node)
	ns.pods[ps.uid] = ps
	c.reconcile(ns)
	if was != nil && was != ns {
		c.reconcile(was)
	}
}

// DeletePod frees whatever the pod held.
func (c *Cache) DeletePod(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removePod(uid)
	delete(c.learned, uid)
}

func (c *Cache) removePod(uid types.UID) {
	if ns := c.detach(uid); ns != nil {
		c.reconcile(ns)
	}
}

// detach forgets a pod without recounting its node; it returns the node
// to recount (nil when there is none left to).
func (c *Cache) detach(uid types.UID) *nodeState {
	ps, ok := c.pods[uid]
	if !ok {
		return nil
	}
	delete(c.pods, uid)
	ns := c.nodes[ps.node]
	if ns == nil {
		return nil
	}
	delete(ns.pods, uid)
	if !ns.exists && len(ns.pods) == 0 {
		delete(c.nodes, ps.node)
		return nil
	}
	return ns
}

// learn counts a pod in the workload estimate, once.
func (c *Cache) learn(uid types.UID, req *policy.Request) {
	if _, ok := c.learned[uid]; ok {
		return
	}
	c.learned[uid] = struct{}{}
	c.learner.Observe(req)
}

// Workload is the target workload of fill and fgd: the shapes of every pod
// seen so far (nil before the first). The learner rebuilds it as the pods
// seen grow (policy.Learner), with the cluster's cards by model as they are
// then, so that results that depend on it can be reused meanwhile: the
// simulator replays the trace through the same learner.
func (c *Cache) Workload() *policy.Workload {
	c.mu.RLock()
	w, fresh := c.learner.Fresh()
	c.mu.RUnlock()
	if fresh {
		return w
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, fresh := c.learner.Fresh(); fresh {
		return w
	}
	c.learner.SetCapacity(c.cardsByModel())
	return c.learner.Workload()
}

// cardsByModel counts the healthy cards of the known nodes by model (the
// fill policy weighs model-limited pods by how scarce their models are).
// Callers hold c.mu.
func (c *Cache) cardsByModel() map[string]int64 {
	out := map[string]int64{}
	for _, ns := range c.nodes {
		if !ns.exists {
			continue
		}
		for i := range ns.pn.Cards {
			if card := &ns.pn.Cards[i]; card.Healthy {
				out[card.Model]++
			}
		}
	}
	return out
}

// reconcile recounts a node's cards from its pods: trusted decisions first,
// then, oldest first, each untrusted pod on the cards it claims if they have
// room, else where it fits best, else unplaced.
func (c *Cache) reconcile(ns *nodeState) {
	c.gen++
	ns.pn.Version = c.gen
	for i := range ns.pn.Cards {
		ns.pn.Cards[i].Used = 0
	}
	var cpu, mem int64
	var untrusted []*podState
	for _, ps := range ns.pods {
		cpu += ps.req.CPUMilli
		mem += ps.req.MemMiB
		if len(ps.req.Containers) == 0 {
			continue
		}
		if ps.trusted() {
			ns.pn.Apply(ps.alloc)
			continue
		}
		untrusted = append(untrusted, ps)
	}
	ns.pn.CPUFree, ns.pn.MemFree = ns.cpuCap-cpu, ns.memCap-mem
	sort.Slice(untrusted, func(i, j int) bool {
		if untrusted[i].created != untrusted[j].created {
			return untrusted[i].created < untrusted[j].created
		}
		return untrusted[i].uid < untrusted[j].uid
	})
	bestFit, _ := policy.Get(policy.Binpack)
	for _, ps := range untrusted {
		if ps.claim != nil && claimFits(&ns.pn, ps.claim, ps.req) {
			ps.trust, ps.alloc = Claimed, wholeSized(&ns.pn, ps.claim, ps.req)
		} else if d, unfit := policy.Place(&ns.pn, gpuOnly(ps.req), bestFit, nil); unfit == nil {
			ps.trust, ps.alloc = Fitted, d.Allocation()
		} else {
			was := ps.trust
			ps.trust, ps.alloc = Unplaced, nil
			if !ns.exists || was == Unplaced {
				continue // the Node object has not arrived yet, or already said
			}
			c.opts.Logger.Error(nil, "GPU pod fits no card of its node: the node is over-committed", "pod", klog.KRef(ps.namespace, ps.name), "node", ns.pn.Name, "reason", unfit.Message(c.opts.Unit))
			continue
		}
		ns.pn.Apply(ps.alloc)
	}
}

// gpuOnly drops CPU and memory from a request: a pod already on a node is
// placed on its cards whatever the node's CPU says.
func gpuOnly(r *policy.Request) *policy.Request {
	return &policy.Request{Containers: r.Containers}
}

// claimFits reports whether every card of a claim exists and has room for it
// (health aside: the pod already runs there).
func claimFits(n *policy.Node, a contract.Allocation, req *policy.Request) bool {
	free := map[int]int64{}
	whole := map[int]bool{}
	for i := range n.Cards {
		free[n.Cards[i].Index] = n.Cards[i].Free()
		whole[n.Cards[i].Index] = n.Cards[i].Used == 0
	}
	for _, c := range req.Containers {
		for card, u := range a[c.Index] {
			f, ok := free[card]
			if !ok {
				return false
			}
			if c.Whole() {
				if !whole[card] {
					return false
				}
				whole[card], free[card] = false, 0
				continue
			}
			if f < u {
				return false
			}
			free[card] = f - u
			whole[card] = false
		}
	}
	return true
}

// wholeSized returns the claim with each whole card counted at its size.
func wholeSized(n *policy.Node, a contract.Allocation, req *policy.Request) contract.Allocation {
	out := a.Clone()
	for _, c := range req.Containers {
		if !c.Whole() {
			continue
		}
		for idx := range out[c.Index] {
			if card := n.Card(idx); card != nil {
				out[c.Index][idx] = card.Total
			}
		}
	}
	return out
}

// Assume records a decision before the bind reaches the API server, so that
// no concurrent decision can use the same memory. It fails, changing
// nothing, when the pod is already placed or the allocation no longer fits.
func (c *Cache) Assume(pod *corev1.Pod, req *policy.Request, node string, a contract.Allocation) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.pods[pod.UID]; ok {
		return fmt.Errorf("%w on node %s", ErrAlreadyPlaced, old.node)
	}
	ns, ok := c.nodes[node]
	if !ok || !ns.exists {
		return fmt.Errorf("%w: %s", ErrUnknownNode, node)
	}
	if err := matches(a, req); err != nil {
		return fmt.Errorf("%w: %v", ErrDoesNotFit, err)
	}
	if !decisionFits(&ns.pn, a, req) {
		return fmt.Errorf("%w: %s on %s", ErrDoesNotFit, a, node)
	}
	ps := &podState{
		uid: pod.UID, namespace: pod.Namespace, name: pod.Name, node: node,
		created: pod.CreationTimestamp.UnixNano(), req: req,
		alloc: wholeSized(&ns.pn, a, req), trust: Assumed,
	}
	c.pods[pod.UID] = ps
	ns.pods[pod.UID] = ps
	c.learn(pod.UID, req)
	c.reconcile(ns)
	return nil
}

// decisionFits is claimFits plus what a new decision needs: healthy cards of
// an allowed model.
func decisionFits(n *policy.Node, a contract.Allocation, req *policy.Request) bool {
	for _, cards := range a {
		for idx := range cards {
			card := n.Card(idx)
			if card == nil || !card.Healthy || !contract.ModelAllowed(req.Models, card.Model) {
				return false
			}
		}
	}
	return claimFits(n, a, req)
}

// Bound marks an assumed pod's bind as done.
func (c *Cache) Bound(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ps, ok := c.pods[uid]; ok {
		ps.bound = true
	}
}

// Forget drops an assumed decision whose bind failed. A pod the informer
// already shows bound is kept.
func (c *Cache) Forget(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ps, ok := c.pods[uid]; ok && ps.trust == Assumed && !ps.bound {
		c.removePod(uid)
	}
}

// Placed returns where a pod is counted, if anywhere.
func (c *Cache) Placed(uid types.UID) (node string, a contract.Allocation, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ps, ok := c.pods[uid]
	if !ok || ps.alloc == nil {
		return "", nil, false
	}
	return ps.node, ps.alloc.Clone(), true
}

// Read calls fn with a lookup of nodes' placement state and the state's
// generation, under the read lock: fn must not keep or change what lookup
// returns, and must not call the cache. A node unknown to the cache (or
// deleted) is nil. The generation changes whenever any card's use does.
func (c *Cache) Read(fn func(gen uint64, lookup func(name string) *policy.Node)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(c.gen, func(name string) *policy.Node {
		ns, ok := c.nodes[name]
		if !ok || !ns.exists {
			return nil
		}
		return &ns.pn
	})
}
