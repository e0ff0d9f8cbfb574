package extender

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/gpupack/gpupack/extender/policy"
)

// evaluation is the outcome of one pod over a list of nodes, at one
// generation of the cache.
type evaluation struct {
	gen      uint64
	at       time.Time
	fit      map[string]policy.Decision
	unfit    map[string]*policy.Unfit
	unknown  []string // nodes the cache does not know
	requests int      // node names asked for
}

// evaluate places the pod on every named node under the server's policy,
// in parallel, against one consistent view of the cache.
func (s *Server) evaluate(ctx context.Context, req *policy.Request, names []string) *evaluation {
	w := s.workload()
	ev := &evaluation{at: time.Now(), requests: len(names)}
	decisions := make([]policy.Decision, len(names))
	unfits := make([]*policy.Unfit, len(names))
	known := make([]bool, len(names))
	s.cache.Read(func(gen uint64, lookup func(string) *policy.Node) {
		ev.gen = gen
		workqueue.ParallelizeUntil(ctx, s.cfg.Parallelism, len(names), func(i int) {
			n := lookup(names[i])
			if n == nil {
				return
			}
			known[i] = true
			decisions[i], unfits[i] = policy.Place(n, req, s.policy, w)
		})
	})
	ev.fit = make(map[string]policy.Decision, len(names))
	ev.unfit = map[string]*policy.Unfit{}
	for i, name := range names {
		switch {
		case !known[i]:
			ev.unknown = append(ev.unknown, name)
		case unfits[i] != nil:
			ev.unfit[name] = unfits[i]
		default:
			ev.fit[name] = decisions[i]
		}
	}
	return ev
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
