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
	capacity       map[string]int64
}

// SetCapacity gives every workload built from now on the cluster's cards by
// model (see Workload.SetCapacity).
func (l *Learner) SetCapacity(cards map[string]int64) {
	l.capacity = cards
	l.w = nil
}

// NewLearner returns a learner that keeps the most frequent shapes covering
// coverage (0..1] of the pods seen.
func NewLearner(coverage float64) *Learner {
	return &Learner{coverage: coverage, shapes: map[Shape]int64{}}
}

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
