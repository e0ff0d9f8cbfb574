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

	// What the measures below are known for (the have* bits).
	have uint8
	frag float64 // Fragmentation(Node, W)
	size int64   // cardSize(Node)
	// room is what fill reads of the node's cards (fillRoom.measure), and
	// unfill unfillable(Node, W, -1, 0).
	room   fillRoom
	unfill float64
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

// rate returns a Rating of n for r under w; the caller gives it back with
// done when the node is rated.
func rate(n *Node, r *Request, w *Workload) *Rating {
	rt := ratings.Get().(*Rating)
	rt.Node, rt.Req, rt.W, rt.have = n, r, w, 0
	return rt
}

// done gives the Rating back: the caller no longer uses it.
func (rt *Rating) done() {
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
