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
	// kept are the measures and card costs kept for the node (Measures),
	// which the rating reads and adds to in place; nil: none, the rating
	// measures into own and keeps no card cost.
	kept *Measures
	own  measured
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

const (
	haveFrag uint8 = 1 << iota
	haveSize
	haveRoom
	haveUnfill
)

// ratings are the Ratings of past placements, for the memory of fill's
// rooms: a Rating is only used while its node is rated.
var ratings = sync.Pool{New: func() any { return new(Rating) }}

// rate returns a Rating of n for r under w, reading and adding to the
// measures kept in m (nil: none, the Rating measures afresh); the caller
// gives it back with done when the node is rated.
func rate(n *Node, r *Request, w *Workload, m *Measures) *Rating {
	rt := ratings.Get().(*Rating)
	rt.Node, rt.Req, rt.W = n, r, w
	rt.own.have, rt.kept = 0, m
	return rt
}

// done gives the Rating back: the caller no longer uses it.
func (rt *Rating) done() {
	rt.Node, rt.Req, rt.W, rt.kept = nil, nil, nil, nil
	ratings.Put(rt)
}

// measures are the measures the Rating reads and adds to: those kept for
// its node, else its own.
func (rt *Rating) measures() *measured {
	if rt.kept != nil {
		return &rt.kept.measured
	}
	return &rt.own
}

// fragmentation is Fragmentation(rt.Node, rt.W).
func (rt *Rating) fragmentation() float64 {
	ms := rt.measures()
	if ms.have&haveFrag == 0 {
		ms.frag, ms.have = Fragmentation(rt.Node, rt.W), ms.have|haveFrag
	}
	return ms.frag
}

// cardSize is cardSize(rt.Node).
func (rt *Rating) cardSize() int64 {
	ms := rt.measures()
	if ms.have&haveSize == 0 {
		ms.size, ms.have = cardSize(rt.Node), ms.have|haveSize
	}
	return ms.size
}

// Measures are what a Rating measured of a node as it is, which no request
// changes, and the card costs it rated there: kept by the caller for the
// node (by its slot, as Answers keeps answers), they spare the next rating
// of the node at the same Version, under the same workload estimate, for
// another request, measuring it again. Each request of a new shape rates
// every node of the cluster; the measures of a node hold for all of them.
// The zero value keeps nothing.
type Measures struct {
	// at is the node's Version plus one (0: nothing kept), w the workload
	// estimate they were measured under.
	at uint64
	w  *Workload
	measured
	costs cardCosts
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
		m.costs.reset(nil)
	}
	return place(n, r, p, w, m)
}

// cardCosts are a policy's CardCost values of one node's cards for the
// last few shares rated there (costShares), kept in its Measures: a pod of
// a new shape (new CPU, say) that asks a share already rated on the
// unchanged node finds its card costs there, since CardCost reads the
// node, the workload, the card and the share only. The openb trace's
// default workload has 7,064 GPU pods of 126 shapes (GPU, CPU, memory) but
// 24 GPU requests; five share sizes are 83% of its 3,078 shared pods.
type cardCosts struct {
	p    *Policy // the policy whose costs these are (nil: none kept)
	next int     // the set a new share takes, round robin
	sets [costShares]costSet
}

// costSet is CardCost(rt, i, share) in cost[i] for each card i whose bit
// is set in known (share 0: the set is free).
type costSet struct {
	share int64
	known uint16
	cost  [costCards]float64
}

const (
	// costShares is how many shares' card costs a node keeps.
	costShares = 4
	// costCards is how many of a node's cards keep their costs: those
	// beyond are rated each time.
	costCards = 16
)

// reset forgets every kept cost, keeping p's from now on.
func (c *cardCosts) reset(p *Policy) {
	c.p, c.next = p, 0
	for i := range c.sets {
		c.sets[i].share, c.sets[i].known = 0, 0
	}
}

// cardCost is p.CardCost(rt, i, share), from the costs kept for rt's node
// when it was rated there before (and kept there when not). A PerPod
// policy's costs are not kept: they may read the request.
func (rt *Rating) cardCost(p *Policy, i int, share int64) float64 {
	if rt.kept == nil || p.PerPod || i >= costCards || share <= 0 {
		return p.CardCost(rt, i, share)
	}
	c := &rt.kept.costs
	if c.p != p {
		c.reset(p)
	}
	set := c.set(share)
	if set.known&(1<<i) == 0 {
		set.cost[i] = p.CardCost(rt, i, share)
		set.known |= 1 << i
	}
	return set.cost[i]
}

// set is the set of share's costs: the one kept, else a new one in place
// of the oldest.
func (c *cardCosts) set(share int64) *costSet {
	for i := range c.sets {
		if c.sets[i].share == share {
			return &c.sets[i]
		}
	}
	s := &c.sets[c.next]
	c.next = (c.next + 1) % costShares
	s.share, s.known = share, 0
	return s
}
