package extender

import (
	"context"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/gpupack/gpupack/extender/policy"
)

// evaluation is the outcome of one pod over a list of nodes, at one
// generation of the cache and one workload estimate. It is immutable once
// built, so filter, prioritize, bind and later pods of the same shape can
// share it.
type evaluation struct {
	gen     uint64
	at      time.Time
	w       *policy.Workload
	names   []string
	results []nodeResult // by position in names
	index   map[string]int
}

// nodeResult is Place's answer for one node at one version of it.
type nodeResult struct {
	known    bool // false: the cache does not know the node
	version  uint64
	decision policy.Decision
	unfit    *policy.Unfit
	// reason is unfit's message, made once per node version.
	reason string
}

func (r *nodeResult) fits() bool { return r.known && r.unfit == nil }

// result returns the answer for a node, if the evaluation has one.
func (ev *evaluation) result(node string) (*nodeResult, bool) {
	i, ok := ev.index[node]
	if !ok {
		return nil, false
	}
	return &ev.results[i], true
}

// sameNodes reports whether the evaluation judged exactly these nodes.
func (ev *evaluation) sameNodes(names []string) bool {
	if len(names) != len(ev.names) {
		return false
	}
	for i := range names {
		if names[i] != ev.names[i] {
			return false
		}
	}
	return true
}

// evaluate places the pod on every named node under the server's policy,
// in parallel, against one consistent view of the cache. A node whose
// state has not changed since the last pod of the same shape was evaluated
// (under the same workload estimate) reuses that result: Place is a pure
// function of the node, the request and the workload.
func (s *Server) evaluate(ctx context.Context, req *policy.Request, names []string) *evaluation {
	w := s.workload()
	key := requestKey(req, s.policy.PerPod)
	prev := s.results.get(key, w)
	ev := &evaluation{at: time.Now(), w: w, names: names, results: make([]nodeResult, len(names)), index: make(map[string]int, len(names))}
	for i, n := range names {
		ev.index[n] = i
	}
	workers := s.cfg.Parallelism
	chunk := max(1, len(names)/(4*workers))
	s.cache.Read(func(gen uint64, lookup func(string) *policy.Node) {
		ev.gen = gen
		workqueue.ParallelizeUntil(ctx, workers, len(names), func(i int) {
			n := lookup(names[i])
			if n == nil {
				return
			}
			if prev != nil {
				if r, ok := prev.result(names[i]); ok && r.known && r.version == n.Version {
					ev.results[i] = *r
					return
				}
			}
			d, u := policy.Place(n, req, s.policy, w)
			ev.results[i] = nodeResult{known: true, version: n.Version, decision: d, unfit: u}
			if u != nil {
				ev.results[i].reason = "gpupack: " + u.Message(s.unit)
			}
		}, workqueue.WithChunkSize(chunk))
	})
	s.results.put(key, ev)
	return ev
}

// resultCache keeps the last evaluation per request shape, for a few shapes.
type resultCache struct {
	mu    sync.Mutex
	order []string
	m     map[string]*evaluation
}

// resultShapes bounds the shapes kept: pods come in a handful of shapes, and
// a large cluster's results are big.
const resultShapes = 16

func (c *resultCache) get(key string, w *policy.Workload) *evaluation {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.m[key]
	if r == nil || r.w != w {
		return nil
	}
	return r
}

func (c *resultCache) put(key string, r *evaluation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*evaluation{}
	}
	if _, ok := c.m[key]; !ok {
		c.order = append(c.order, key)
	}
	c.m[key] = r
	for len(c.order) > resultShapes {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

// requestKey identifies what Place reads of a request: the pod itself too
// (its salt) under a policy that draws per pod.
func requestKey(r *policy.Request, perPod bool) string {
	b := make([]byte, 0, 64)
	if perPod {
		b = strconv.AppendUint(b, r.Salt, 16)
		b = append(b, '#')
	}
	for _, c := range r.Containers {
		b = strconv.AppendInt(b, int64(c.Index), 10)
		b = append(b, c.Name...) // reasons name the container
		b = append(b, ':')
		b = strconv.AppendInt(b, c.Mem, 10)
		b = append(b, 'x')
		b = strconv.AppendInt(b, c.Count, 10)
		b = append(b, ',')
	}
	b = append(b, '|')
	b = strconv.AppendInt(b, r.CPUMilli, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, r.MemMiB, 10)
	for _, m := range r.Models {
		b = append(b, '|')
		b = append(b, m...)
	}
	return string(b)
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
