package extender

import (
	"context"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/policy"
)

// evaluation is the outcome of one pod over a list of nodes, at one
// generation of the cache and one workload estimate. It is immutable once
// built, so filter, prioritize and bind can share it.
type evaluation struct {
	gen   uint64
	at    time.Time
	names []string
	// results are by position in names. They point to answers that are
	// never changed once made, shared with the answers kept for the
	// request's shape (resultCache), so an evaluation copies no answer and
	// keeps nothing of its own beyond one pointer a node.
	results []*nodeResult
}

// nodeResult is Place's answer for one node at one version of it. A cold
// evaluation of a large cluster makes one a node, so it is small: what
// only a node where the pod does not fit needs is behind one pointer, miss.
type nodeResult struct {
	decision policy.Decision
	miss     *miss // nil where the pod fits
}

// miss is why a pod does not fit a node, as filter reports it: the text,
// and the text as encoding/json writes a string, for the answer
// (filterjson.go). The nodes of an evaluation that fail alike share one.
type miss struct {
	unfit *policy.Unfit
	text  string
	json  []byte
}

// newMiss is the miss of u (nil: a node that the cache does not know, or
// a request that no node can serve) with the text given.
func newMiss(u *policy.Unfit, text string) *miss {
	return &miss{unfit: u, text: text, json: appendQuoted(make([]byte, 0, len(text)+2), text)}
}

// known is false for the answer of a node the cache does not know.
func (r *nodeResult) known() bool { return r != unknownNode }

func (r *nodeResult) fits() bool { return r.known() && r.miss == nil }

// unknownNode is the answer for a node the cache does not know.
var unknownNode = &nodeResult{miss: newMiss(nil, "gpupack: node is not in the extender's cache (deleted, or not yet seen)")}

// result returns the answer for a node, if the evaluation has one.
func (ev *evaluation) result(node string) (*nodeResult, bool) {
	i := slices.Index(ev.names, node)
	if i < 0 {
		return nil, false
	}
	return ev.results[i], true
}

// subset is the evaluation of the nodes at positions at only (increasing).
func (ev *evaluation) subset(at []int) *evaluation {
	sub := &evaluation{gen: ev.gen, at: ev.at, names: make([]string, len(at)), results: make([]*nodeResult, len(at))}
	for j, i := range at {
		sub.names[j], sub.results[j] = ev.names[i], ev.results[i]
	}
	return sub
}

// sameNodes reports whether the evaluation judged exactly these nodes.
func (ev *evaluation) sameNodes(names []string) bool {
	return slices.Equal(names, ev.names)
}

// evaluate places the pod on every named node under the server's policy,
// in parallel, on a snapshot of the cache (the cache's lock is not held
// while nodes are rated). A node whose state has not changed since a pod of
// the same shape was evaluated, under the same workload estimate, keeps its
// answer (policy.Answers: Place is a pure function of the node, the request
// and the workload).
func (s *Server) evaluate(ctx context.Context, req *policy.Request, names []string) *evaluation {
	w := s.workload()
	key := policy.RequestKey(req, s.policy)
	snap := snapshots.Get().(*cache.Snapshot)
	defer func() {
		// The pool keeps the memory, not the nodes.
		clear(snap.Nodes)
		snapshots.Put(snap)
	}()
	s.cache.SnapshotInto(snap, names)
	ev := &evaluation{gen: snap.Gen, at: time.Now(), names: names, results: make([]*nodeResult, len(names))}
	// The answers are this evaluation's alone until it gives them back:
	// the lookups below and the keeping after the workers are the only
	// uses, and the answers they point to are never changed.
	kept := s.results.take(key, w, snap.Slots)
	var todo []int // positions of the nodes to rate
	reused := 0
	for i, v := range snap.Nodes {
		if v.Node == nil {
			ev.results[i] = unknownNode
		} else if r := kept.Get(v.Slot, v.Node); r != nil {
			ev.results[i] = *r
			reused++
		} else {
			todo = append(todo, i)
		}
	}
	s.metrics.kept.Add(float64(reused))
	s.metrics.rated.Add(float64(len(todo)))
	if len(todo) > 0 {
		workers := s.cfg.Parallelism
		chunk := max(1, len(todo)/(4*workers))
		wl := kept.Workload()
		// The answers are made in one block, one allocation where a
		// cold evaluation of a large cluster would make thousands. A
		// block lives while one of its answers is kept: at most one
		// block per evaluation that is still some node's answer.
		made := make([]nodeResult, len(todo))
		// The nodes' measures, when no other evaluation has them: each
		// worker reads and keeps those of its own nodes' slots.
		// A node named twice (a request kube-scheduler never sends, but
		// one may) uses them at its first position only, so that no two
		// workers share a node's.
		var measures []policy.Measures
		var own []bool
		if s.policy.NeedsWorkload {
			var took bool
			if measures, took = s.measures.take(snap.Slots); took {
				defer s.measures.give()
				own = firstOfSlot(snap, todo)
			}
		}
		// Why a pod does not fit a node is kept here by the workers, and
		// made a miss below, where the nodes that fail alike share one.
		scratch := unfitScratch.Get().(*[]*policy.Unfit)
		unfits := slices.Grow((*scratch)[:0], len(todo))[:len(todo)]
		defer func() {
			clear(unfits)
			*scratch = unfits[:0]
			unfitScratch.Put(scratch)
		}()
		workqueue.ParallelizeUntil(ctx, workers, len(todo), func(j int) {
			i := todo[j]
			v := snap.Nodes[i]
			var m *policy.Measures
			if measures != nil && own[j] {
				m = &measures[v.Slot]
			}
			d, u := policy.PlaceMeasured(v.Node, req, s.policy, wl, m)
			made[j].decision, unfits[j] = d, u
			ev.results[i] = &made[j]
		}, workqueue.WithChunkSize(chunk))
		ms := misses{unit: s.unit}
		for j, i := range todo {
			r := ev.results[i]
			if r == nil {
				// Left unrated (the context ended): answered as
				// unknown, and nothing is kept.
				ev.results[i] = unknownNode
				continue
			}
			if u := unfits[j]; u != nil {
				r.miss = ms.of(u)
			}
			v := snap.Nodes[i]
			kept.Keep(v.Slot, v.Node, r)
		}
	}
	s.results.give(key, kept)
	return ev
}

// misses makes the misses of an evaluation. On a busy cluster most nodes
// do not fit, many for the same reason in the same numbers ("no card has
// free memory, container "c0" needs 8 GiB"): such nodes share one miss,
// made once.
type misses struct {
	unit contract.Unit
	made map[unfitKey]*miss
}

// unfitKey is an Unfit without its lists of models (TestMisses keeps the
// two in step).
type unfitKey struct {
	kind         policy.UnfitKind
	container    string
	need, have   int64
	cards        int
	unresolvable bool
}

// of is the miss of u.
func (ms *misses) of(u *policy.Unfit) *miss {
	if len(u.Models) > 0 || len(u.NodeModels) > 0 {
		return newMiss(u, "gpupack: "+u.Message(ms.unit))
	}
	k := unfitKey{kind: u.Kind, container: u.Container, need: u.Need, have: u.Have, cards: u.Cards, unresolvable: u.Unresolvable}
	if m, ok := ms.made[k]; ok {
		return m
	}
	if ms.made == nil {
		ms.made = map[unfitKey]*miss{}
	}
	m := newMiss(u, "gpupack: "+u.Message(ms.unit))
	ms.made[k] = m
	return m
}

// unfitScratch holds the workers' Unfits of past evaluations, for their
// memory.
var unfitScratch = sync.Pool{New: func() any { return new([]*policy.Unfit) }}

// snapshots are the cache snapshots of past evaluations, for the memory of
// their nodes: a snapshot is only read while its evaluation runs.
var snapshots = sync.Pool{New: func() any { return new(cache.Snapshot) }}

// resultCache keeps the answers of the last evaluations by request shape
// (policy.RequestKey), for a few shapes. An evaluation takes its shape's
// answers and gives them back when done, so no two evaluations share them;
// another of the same shape meanwhile starts from none.
type resultCache struct {
	mu sync.Mutex
	m  map[string]*policy.Answers[*nodeResult]
	// order is m's keys, oldest first.
	order []string
	// spare are the answers of the last shape dropped, emptied for the
	// next new shape: a large cluster's answers are big.
	spare *policy.Answers[*nodeResult]
}

// resultShapes bounds the shapes kept: pods come in a handful of shapes, and
// a large cluster's answers are big.
const resultShapes = 16

// take returns the answers of a shape under w, the caller's until it gives
// them back: those kept (emptied if kept under another workload estimate),
// else none yet, with room for slots nodes.
func (c *resultCache) take(key string, w *policy.Workload, slots int) *policy.Answers[*nodeResult] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.m[key]; t != nil {
		c.m[key] = nil
		return t.For(w)
	}
	if t := c.spare; t != nil {
		c.spare = nil
		t.Reset(w)
		return t
	}
	return policy.NewAnswers[*nodeResult](w, slots)
}

// give keeps a shape's answers, dropping the oldest shape beyond
// resultShapes.
func (c *resultCache) give(key string, t *policy.Answers[*nodeResult]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*policy.Answers[*nodeResult]{}
	}
	if _, ok := c.m[key]; !ok {
		c.order = append(c.order, key)
	}
	c.m[key] = t
	for len(c.order) > resultShapes {
		if old := c.m[c.order[0]]; old != nil {
			c.spare = old
		}
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

// firstOfSlot reports for each position of todo whether it is the first
// in todo of its node's slot.
func firstOfSlot(snap *cache.Snapshot, todo []int) []bool {
	seen := make([]uint64, (snap.Slots+63)/64)
	first := make([]bool, len(todo))
	for j, i := range todo {
		sl := snap.Nodes[i].Slot
		if w, b := sl/64, uint64(1)<<(sl%64); seen[w]&b == 0 {
			seen[w] |= b
			first[j] = true
		}
	}
	return first
}

// measuresCache keeps the measures of each node (policy.Measures), by
// slot: unlike answers, they hold for every request shape, so the first pod
// of a new shape measures no node that a pod of another shape measured at
// its Version (a node's measures are a few words per shape group of the
// workload). One evaluation at a time has them (take, give); another
// meanwhile rates without.
type measuresCache struct {
	mu    sync.Mutex
	m     []policy.Measures
	taken bool
}

// take returns the measures, with room for slots nodes, and true; false
// while another evaluation has them. Who took them gives them back.
func (c *measuresCache) take(slots int) ([]policy.Measures, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.taken {
		return nil, false
	}
	c.taken = true
	if len(c.m) < slots {
		c.m = append(c.m, make([]policy.Measures, slots-len(c.m))...)
	}
	return c.m, true
}

// give returns the measures take gave.
func (c *measuresCache) give() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.taken = false
}

// workload is the FGD target, or nil for policies that do not read one.
func (s *Server) workload() *policy.Workload {
	if !s.policy.NeedsWorkload {
		return nil
	}
	return s.cache.Workload()
}

// memoSize bounds the memo: kube-scheduler runs one scheduling cycle at a
// time, so a few pods in flight are all it needs, and an evaluation of a
// large cluster is big.
const memoSize = 64

// memo keeps each pod's last evaluation between filter, prioritize and
// bind: prioritize reuses filter's work while no card changed, and bind
// starts from the cards the score assumed. (Place is deterministic, so an
// evaluation dropped from the memo is recomputed to the same cards.)
type memo struct {
	mu  sync.Mutex
	ttl time.Duration
	m   map[types.UID]*evaluation
}

func newMemo(ttl time.Duration) *memo { return &memo{ttl: ttl, m: map[types.UID]*evaluation{}} }

func (m *memo) put(uid types.UID, ev *evaluation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m[uid] = ev
	for len(m.m) > memoSize {
		var oldest types.UID
		for k, e := range m.m {
			if oldest == "" || e.at.Before(m.m[oldest].at) {
				oldest = k
			}
		}
		delete(m.m, oldest)
	}
}

func (m *memo) get(uid types.UID) *evaluation {
	m.mu.Lock()
	defer m.mu.Unlock()
	ev := m.m[uid]
	if ev != nil && time.Since(ev.at) > m.ttl {
		delete(m.m, uid)
		return nil
	}
	return ev
}

func (m *memo) drop(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, uid)
}
