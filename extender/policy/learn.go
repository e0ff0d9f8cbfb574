package policy

// Learner estimates the workload from the pods seen so far, by shape, as an
// extender that cannot read the future must. The estimate is rebuilt once
// the pods counted grew by 5% (every pod while fewer than 20 were seen), so
// that results computed against it can be reused meanwhile. It is not safe
// for concurrent use: callers hold their own lock.
type Learner struct {
	coverage       float64
	shapes         map[Shape]int64
	counted, built int64
	w              *Workload
	capacity       Capacity
}

// SetCapacity gives every workload built from now on the cluster's nodes by
// class (see Workload.SetCapacity).
func (l *Learner) SetCapacity(nodes Capacity) {
	l.capacity = nodes
	l.w = nil
}

// NewLearner returns a learner of the workload estimate p reads: it keeps
// the most frequent shapes covering p.WorkloadCoverage(coverage) of the
// pods seen, so a coverage of 0 is the policy's own.
func NewLearner(p *Policy, coverage float64) *Learner {
	return &Learner{coverage: p.WorkloadCoverage(coverage), shapes: map[Shape]int64{}}
}

// Coverage is the share of pods whose shapes the estimate keeps.
func (l *Learner) Coverage() float64 { return l.coverage }

// Observe counts one pod.
func (l *Learner) Observe(r *Request) {
	l.shapes[ShapeOf(r)]++
	l.counted++
}

// Fresh returns the current estimate and true when Workload would not
// rebuild it, without changing the learner (callers under a read lock).
func (l *Learner) Fresh() (*Workload, bool) {
	if l.counted == 0 {
		return nil, true
	}
	return l.w, !l.stale()
}

func (l *Learner) stale() bool { return l.w == nil || l.counted >= l.built+max(1, l.built/20) }

// Workload returns the current estimate (nil before any pod was seen).
func (l *Learner) Workload() *Workload {
	if l.counted == 0 {
		return nil
	}
	if l.stale() {
		l.w, l.built = NewWorkload(l.shapes, l.coverage), l.counted
		l.w.SetCapacity(l.capacity)
	}
	return l.w
}
