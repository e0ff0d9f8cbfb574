package policy

import "sync"

// Rating is one node rated for one request under one workload estimate:
// what a policy's CardCost and NodeScore read. It also keeps the measures
// of the node as it is (before the pod) that a policy reads again for
// every card it rates, each computed at its first use: FGD's
// fragmentation, and the room fill's shapes have on the cards. So rating
// the cards of a node computes them once, not once a card. A Rating holds
// while its node is unchanged: the search, which changes its scratch node
// as it places shares, rates each state of it afresh.
type Rating struct {
	Node *Node
	Req  *Request
	W    *Workload
	measured
}

// measured is what is measured of a node as it is, under a workload
// estimate: a Rating's, and what Measures keep of it.
type measured struct {
	// What the measures below are known for (the have* bits).
	have uint8
	frag float64 // Fragmentation(node, w)
	size int64   // cardSize(node)
	// room is what fill reads of the node's cards (fillRoom.measure), and
	// unfill unfillable(node, w, -1, 0).
	room   fillRoom
	unfill float64
}

// copyFrom sets d to s, reusing d's memory for the room (copied only
// when s has measured it).
func (d *measured) copyFrom(s *measured) {
	rooms := d.room.rooms[:0]
	if s.have&haveRoom != 0 {
		rooms = append(rooms, s.room.rooms...)
	}
	*d = *s
	d.room.rooms = rooms
}

const (
	haveFrag uint8 = 1 << iota
	haveSize
	haveRoom
	haveUnfill
)

// ratings are the Ratings of past placements, for the memory of fill's
// rooms: a Rating is only used while its node is rated.
var ratings = sync.Pool{New: func() any { return new(Rating) }}

// rate returns a Rating of n for r under w, starting from the measures
// kept in m (nil: none); the caller gives it back with done(m) when the
// node is rated.
func rate(n *Node, r *Request, w *Workload, m *Measures) *Rating {
	rt := ratings.Get().(*Rating)
	rt.Node, rt.Req, rt.W, rt.have = n, r, w, 0
	if m != nil {
		rt.load(m)
	}
	return rt
}

// done keeps what the Rating measured in m (nil: nowhere) and gives the
// Rating back: the caller no longer uses it.
func (rt *Rating) done(m *Measures) {
	if m != nil {
		rt.store(m)
	}
	rt.Node, rt.Req, rt.W = nil, nil, nil
	ratings.Put(rt)
}

// fragmentation is Fragmentation(rt.Node, rt.W).
func (rt *Rating) fragmentation() float64 {
	if rt.have&haveFrag == 0 {
		rt.frag, rt.have = Fragmentation(rt.Node, rt.W), rt.have|haveFrag
	}
	return rt.frag
}

// cardSize is cardSize(rt.Node).
func (rt *Rating) cardSize() int64 {
	if rt.have&haveSize == 0 {
		rt.size, rt.have = cardSize(rt.Node), rt.have|haveSize
	}
	return rt.size
}

// Measures are what a Rating measured of a node as it is, which no request
// changes: kept by the caller for the node (by its slot, as Answers keeps
// answers), they spare the next rating of the node at the same Version,
// under the same workload estimate, for another request, measuring it
// again. Each request of a new shape rates every node of the cluster; the
// measures of a node hold for all of them. The zero value keeps nothing.
type Measures struct {
	// at is the node's Version plus one (0: nothing kept), w the workload
	// estimate they were measured under.
	at uint64
	w  *Workload
	measured
}

// PlaceMeasured is Place, starting from m's measures of n when they were
// taken at n's Version under w, and keeping in m what the rating measured.
// m belongs to the caller for the call (nil: Place).
func PlaceMeasured(n *Node, r *Request, p *Policy, w *Workload, m *Measures) (Decision, *Unfit) {
	if m == nil {
		return Place(n, r, p, w)
	}
	if m.at != n.Version+1 || m.w != w {
		m.at, m.w, m.have = n.Version+1, w, 0
	}
	return place(n, r, p, w, m)
}

// load starts rt from the measures kept in m (of rt's node).
func (rt *Rating) load(m *Measures) { rt.measured.copyFrom(&m.measured) }

// store keeps in m what rt measured, when it measured more than m holds.
func (rt *Rating) store(m *Measures) {
	if rt.have&^m.have != 0 {
		m.measured.copyFrom(&rt.measured)
	}
}
