package cache

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"unique"

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
	// Policy is the placement policy whose workload estimate the cache
	// learns (nil: policy.DefaultCoverage for WorkloadCoverage 0).
	Policy *policy.Policy
	// WorkloadCoverage is the share of pods whose shapes (the most frequent
	// first) the workload estimate keeps; 0: the policy's own
	// (policy.Policy.WorkloadCoverage).
	WorkloadCoverage float64
	// Logger logs state changes that need an operator's eye.
	Logger klog.Logger
}

// Errors Assume returns; callers branch on them.
var (
	ErrUnknownNode   = errors.New("node is not known to the extender")
	ErrAlreadyPlaced = errors.New("pod is already placed")
	ErrDoesNotFit    = errors.New("allocation does not fit the node")
)

// Cache is safe for concurrent use. Writers (the informers' handlers,
// Assume, Bound, Forget) hold mu; placement reads each node's published
// policy.Node, which is replaced, never changed (see Snapshot), so a long
// evaluation never holds the lock that the informers wait on.
type Cache struct {
	opts Options

	mu    sync.RWMutex
	nodes map[string]*nodeState
	pods  map[types.UID]*podState
	// learner counts every pod seen, by shape (the workload estimate of
	// fill and fgd); learned remembers which pods were counted.
	learner *policy.Learner
	learned map[types.UID]struct{}
	// gen is the last node Version given out; it changes whenever any
	// node's published state does, and no two node states share one.
	gen uint64
	// slots numbers the nodes (see NodeView.Slot): freed slots are reused.
	slots int
	free  []int
}

// nodeState is one node: what its Node object says, its pods, and what
// placement sees of them (pn).
type nodeState struct {
	name   string
	slot   int
	exists bool // the Node object is in the informer
	spec   nodeSpec
	// source, problem, address and uuids are shown by /inspect, never read
	// by placement.
	source, problem, address string
	uuids                    map[int]string
	pods                     map[types.UID]*podState
	// pn is the node as placement sees it, published by recount: a new
	// one each time, never changed once published.
	pn *policy.Node
}

// nodeSpec is what placement reads of a Node object: its cards (as empty)
// and its allocatable CPU and memory. A Node update that leaves it equal (a
// heartbeat, a label, a new address) does not recount the node: recounting
// would give the same cards and shares, and only invalidate every result
// computed on it.
type nodeSpec struct {
	cards     []policy.Card
	resources bool  // the Node says its allocatable CPU
	cpuCap    int64 // millicores
	memCap    int64 // MiB
}

func (a *nodeSpec) equal(b *nodeSpec) bool {
	return slices.Equal(a.cards, b.cards) && a.resources == b.resources && a.cpuCap == b.cpuCap && a.memCap == b.memCap
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
		learner: policy.NewLearner(opts.Policy, opts.WorkloadCoverage),
		learned: map[types.UID]struct{}{},
	}
}

// Unit is the memory unit the cache counts in.
func (c *Cache) Unit() contract.Unit { return c.opts.Unit }

// node returns the named node's state, made (with no card, not existing)
// when the cache has none yet. Callers hold c.mu.
func (c *Cache) node(name string) *nodeState {
	ns, ok := c.nodes[name]
	if !ok {
		slot := c.slots
		if k := len(c.free); k > 0 {
			slot, c.free = c.free[k-1], c.free[:k-1]
		} else {
			c.slots++
		}
		ns = &nodeState{name: name, slot: slot, pods: map[types.UID]*podState{}, pn: &policy.Node{Name: name}}
		c.nodes[name] = ns
	}
	return ns
}

// forget drops a node that neither exists nor holds pods. Callers hold c.mu.
func (c *Cache) forget(ns *nodeState) {
	delete(c.nodes, ns.name)
	c.free = append(c.free, ns.slot)
}

// SetNode adds or updates a node from its Node object.
func (c *Cache) SetNode(node *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := c.node(node.Name)
	nc := contract.CardsOf(node, c.opts.Unit)
	if nc.Problem != "" && nc.Problem != ns.problem {
		c.opts.Logger.Error(nil, "Node's GPU cards are not read as published", "node", klog.KObj(node), "problem", nc.Problem, "source", nc.Source)
	}
	ns.source, ns.problem, ns.address, ns.uuids = nc.Source, nc.Problem, internalIP(node), nil
	spec := nodeSpec{
		resources: hasCPU(node),
		cpuCap:    node.Status.Allocatable.Cpu().MilliValue(),
		memCap:    node.Status.Allocatable.Memory().Value() >> 20,
	}
	for _, card := range nc.Cards {
		// One string per model for the whole cluster: placement compares
		// the models of thousands of cards, and equal strings at one
		// address compare without reading their bytes.
		model := unique.Make(card.Model).Value()
		spec.cards = append(spec.cards, policy.Card{Index: card.Index, Model: model, Total: card.Total, Healthy: card.Healthy})
		if card.UUID != "" {
			if ns.uuids == nil {
				ns.uuids = map[int]string{}
			}
			ns.uuids[card.Index] = card.UUID
		}
	}
	if ns.exists && spec.equal(&ns.spec) {
		return
	}
	ns.exists, ns.spec = true, spec
	c.recount(ns)
}

func hasCPU(node *corev1.Node) bool {
	_, ok := node.Status.Allocatable[corev1.ResourceCPU]
	return ok
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
		c.forget(ns)
		return
	}
	ns.exists, ns.spec = false, nodeSpec{}
	c.recount(ns)
}

func internalIP(node *corev1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// SetPod follows a pod from the informer: the rows "informer shows the
// pod" of the table at state.
func (c *Cache) SetPod(pod *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, known := c.pods[pod.UID]
	switch {
	case terminal(pod):
		c.removePod(pod.UID)
	case pod.Spec.NodeName == "":
		// Pending: learned only; annotations are never counted, and a bind
		// in flight stays.
		if _, ok := c.learned[pod.UID]; !ok {
			c.learn(pod.UID, c.requestOf(pod))
		}
	case known && ps.state.trusted() && ps.node == pod.Spec.NodeName:
		// On its node: our own decision stands, the bind is done. An
		// edited annotation does not move a running container.
		ps.state = ps.state.seenBound()
	default:
		fp := fingerprint(pod)
		if known && ps.fingerprint == fp {
			return // a status update: nothing placement reads has changed
		}
		c.read(pod, fp)
	}
}

// read (re)counts a bound pod from what it says: a decision signed by this
// extender for its node is signed; anything else is placed by the recount
// of its node that follows.
func (c *Cache) read(pod *corev1.Pod, fp string) {
	req := c.requestOf(pod)
	c.learn(pod.UID, req)
	was := c.detach(pod.UID)
	ps := &podState{
		uid: pod.UID, namespace: pod.Namespace, name: pod.Name, node: pod.Spec.NodeName,
		created: pod.CreationTimestamp.UnixNano(), req: req, state: noGPU, fingerprint: fp,
	}
	if len(req.Containers) > 0 {
		claim, isSigned, err := claimOf(pod, req, c.opts.SigningKey)
		switch {
		case err != nil:
			c.opts.Logger.V(2).Info("Bound GPU pod has no usable allocation; placing it where it fits", "pod", klog.KObj(pod), "node", pod.Spec.NodeName, "err", err)
			ps.state = fitted
		case isSigned:
			ps.state, ps.alloc = signed, claim
		default:
			ps.state, ps.claim = claimed, claim
		}
	}
	c.pods[pod.UID] = ps
	ns := c.node(ps.node)
	ns.pods[ps.uid] = ps
	c.recount(ns)
	if was != nil && was != ns {
		c.recount(was)
	}
}

// requestOf is RequestOf; a bad request never gets a card: only its CPU and
// memory count.
func (c *Cache) requestOf(pod *corev1.Pod) *policy.Request {
	req, err := RequestOf(pod)
	if err != nil && !errors.Is(err, contract.ErrNoGPU) {
		c.opts.Logger.V(4).Info("Pod asks for GPU in a way the extender rejects", "pod", klog.KObj(pod), "err", err)
	}
	return req
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
		c.recount(ns)
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
		c.forget(ns)
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
// seen grow (policy.Learner), with the cluster's nodes by class as they are
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
	c.learner.SetCapacity(c.capacity())
	return c.learner.Workload()
}

// capacity is the known nodes by class: their healthy cards by model, with
// their allocatable CPU and memory where the Node says them (fill weighs
// model-limited pods by how scarce their models are, and opens the
// commonest kind of node first). Callers hold c.mu.
func (c *Cache) capacity() policy.Capacity {
	out := policy.Capacity{}
	for _, ns := range c.nodes {
		if !ns.exists {
			continue
		}
		cards := map[string]int{}
		for i := range ns.pn.Cards {
			if card := &ns.pn.Cards[i]; card.Healthy {
				cards[card.Model]++
			}
		}
		var cpu, mem int64
		if ns.spec.resources {
			cpu, mem = ns.spec.cpuCap, ns.spec.memCap
		}
		for model, n := range cards {
			out.Add(model, n, cpu, mem)
		}
	}
	return out
}

// recount publishes what placement sees of a node, from its spec and its
// pods: trusted decisions first, then, oldest first, each untrusted pod
// placed (claimed, fitted or unplaced: the table at state). The node is a
// new policy.Node with a new Version; the one it replaces is left as it
// was for the evaluations that still read it. Callers hold c.mu.
func (c *Cache) recount(ns *nodeState) {
	n := newNode(ns.spec.cards)
	n.Name, n.Resources = ns.name, ns.spec.resources
	if ns.spec.resources {
		n.CPUMilli, n.MemMiB = ns.spec.cpuCap, ns.spec.memCap
	}
	var cpu, mem int64
	var untrusted []*podState
	for _, ps := range ns.pods {
		cpu += ps.req.CPUMilli
		mem += ps.req.MemMiB
		if len(ps.req.Containers) == 0 {
			continue
		}
		if ps.state.trusted() {
			n.Apply(ps.alloc)
			continue
		}
		untrusted = append(untrusted, ps)
	}
	n.CPUFree, n.MemFree = ns.spec.cpuCap-cpu, ns.spec.memCap-mem
	sort.Slice(untrusted, func(i, j int) bool {
		if untrusted[i].created != untrusted[j].created {
			return untrusted[i].created < untrusted[j].created
		}
		return untrusted[i].uid < untrusted[j].uid
	})
	bestFit, _ := policy.Get(policy.Binpack)
	for _, ps := range untrusted {
		was := ps.state
		var unfit *policy.Unfit
		ps.state, ps.alloc, unfit = place(n, ps, bestFit)
		if ps.state != unplaced {
			n.Apply(ps.alloc)
			continue
		}
		if ns.exists && was != unplaced { // else the Node has not arrived yet, or it was said
			c.opts.Logger.Error(nil, "GPU pod fits no card of its node: the node is over-committed", "pod", klog.KRef(ps.namespace, ps.name), "node", ns.name, "reason", unfit.Message(c.opts.Unit))
		}
	}
	c.gen++
	n.Version = c.gen
	ns.pn = n
}

// nodeBlock is a node with room for its cards in the same allocation.
type nodeBlock struct {
	node  policy.Node
	cards [8]policy.Card
}

// newNode returns a node with a copy of cards, the cards in the node's own
// allocation where they fit (8 or fewer, as most nodes have): rating
// thousands of nodes is bound by fetching them from memory, and a node
// whose cards lie beside it is fetched in one go, not in two.
func newNode(cards []policy.Card) *policy.Node {
	if len(cards) == 0 || len(cards) > len(nodeBlock{}.cards) {
		return &policy.Node{Cards: slices.Clone(cards)}
	}
	b := &nodeBlock{}
	b.node.Cards = b.cards[:copy(b.cards[:], cards):len(cards)]
	return &b.node
}

// place decides where an untrusted pod counts on n, as n is after every
// trusted decision and the older untrusted pods: on the cards it claims if
// they exist and have room (claimed), else where gpushare's best fit puts
// it (fitted), else nowhere (unplaced, and why).
func place(n *policy.Node, ps *podState, bestFit *policy.Policy) (state, contract.Allocation, *policy.Unfit) {
	if ps.claim != nil && claimFits(n, ps.claim, ps.req) {
		return claimed, wholeSized(n, ps.claim, ps.req), nil
	}
	d, unfit := policy.Place(n, gpuOnly(ps.req), bestFit, nil)
	if unfit != nil {
		return unplaced, nil, unfit
	}
	return fitted, d.Allocation(), nil
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
// no concurrent decision can use the same memory: the pod is binding. It
// fails, changing nothing, when the pod is already placed or the allocation
// no longer fits.
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
	if !decisionFits(ns.pn, a, req) {
		return fmt.Errorf("%w: %s on %s", ErrDoesNotFit, a, node)
	}
	ps := &podState{
		uid: pod.UID, namespace: pod.Namespace, name: pod.Name, node: node,
		created: pod.CreationTimestamp.UnixNano(), req: req,
		alloc: wholeSized(ns.pn, a, req), state: binding,
	}
	c.pods[pod.UID] = ps
	ns.pods[pod.UID] = ps
	c.learn(pod.UID, req)
	c.recount(ns)
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

// Bound marks an assumed pod's bind as done (binding to assumed).
func (c *Cache) Bound(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ps, ok := c.pods[uid]; ok {
		ps.state = ps.state.seenBound()
	}
}

// Forget drops an assumed decision whose bind failed (binding to none). A
// pod whose bind is done, or that the informer already shows bound, is kept.
func (c *Cache) Forget(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ps, ok := c.pods[uid]; ok && ps.state == binding {
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

// NodeView is one node of a Snapshot.
type NodeView struct {
	// Node is the node as placement sees it; nil when the cache does not
	// know it, or it was deleted. It is never changed: a change publishes
	// another.
	Node *policy.Node
	// Slot numbers the node among the cache's, stable while the node
	// lives (a freed slot is reused by a later node, whose Versions are
	// new): policy.Answers keeps the node's answers under it.
	Slot int
}

// Snapshot is some nodes as placement sees them, all at one generation of
// the cache.
type Snapshot struct {
	// Gen is the generation: while the cache's is still Gen, no node's
	// state has changed since.
	Gen uint64
	// Nodes are by position in the names asked for.
	Nodes []NodeView
	// Slots is the number of slots in use: every Slot is below it.
	Slots int
}

// Snapshot returns the named nodes as placement sees them now. It holds the
// read lock only to look them up: the nodes it returns are never changed
// afterwards, so an evaluation reads them without the lock however long it
// takes, and the informers' updates do not wait behind it.
func (c *Cache) Snapshot(names []string) Snapshot {
	var s Snapshot
	c.SnapshotInto(&s, names)
	return s
}

// SnapshotInto is Snapshot into s, reusing the memory of s.Nodes when it
// has room: a caller that snapshots thousands of nodes per request keeps
// one Snapshot (clearing its Nodes before it keeps it, so that it holds
// no node) instead of allocating one each time.
func (c *Cache) SnapshotInto(s *Snapshot, names []string) {
	if cap(s.Nodes) < len(names) {
		s.Nodes = make([]NodeView, len(names))
	}
	s.Nodes = s.Nodes[:len(names)]
	c.mu.RLock()
	defer c.mu.RUnlock()
	s.Gen, s.Slots = c.gen, c.slots
	for i, name := range names {
		if ns, ok := c.nodes[name]; ok && ns.exists {
			s.Nodes[i] = NodeView{Node: ns.pn, Slot: ns.slot}
		} else {
			s.Nodes[i] = NodeView{}
		}
	}
}

// Intern calls fn, under the read lock, with intern: the cache's own copy
// of a node's name, given the name's bytes, where the cache knows the node;
// else a new string. A request names every node of the cluster: interned,
// its names cost no allocation, and a map finds them by comparing
// pointers. fn must be quick and must not call the cache.
func (c *Cache) Intern(fn func(intern func(name []byte) string)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(func(name []byte) string {
		if ns, ok := c.nodes[string(name)]; ok {
			return ns.name
		}
		return string(name)
	})
}

// Read calls fn with the cache's generation and a lookup of nodes as
// placement sees them, under the read lock: fn must be quick and must not
// call the cache (to evaluate many nodes, take a Snapshot). A node unknown
// to the cache (or deleted) is nil; a node returned is never changed, and
// fn may keep it. The generation changes whenever any card's use does.
func (c *Cache) Read(fn func(gen uint64, lookup func(name string) *policy.Node)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(c.gen, func(name string) *policy.Node {
		ns, ok := c.nodes[name]
		if !ok || !ns.exists {
			return nil
		}
		return ns.pn
	})
}
