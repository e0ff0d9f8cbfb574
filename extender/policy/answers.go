package policy

import (
	"strconv"
)

// This file keeps Place's answers, so that each is computed once per state
// of a node. The extender's evaluation and the simulator's replay both keep
// their answers in Answers, so the simulator's figures are measured under
// the extender's own reuse rule.

// RequestKey identifies what Place reads of a request: its GPU containers
// (their names too, as reasons name them), CPU, memory and allowed models,
// and, under a policy that draws per pod (Policy.PerPod), the pod itself
// (its salt). Requests with one key get one answer on one node.
func RequestKey(r *Request, p *Policy) string {
	b := make([]byte, 0, 64)
	if p.PerPod {
		b = strconv.AppendUint(b, r.Salt, 16)
		b = append(b, '#')
	}
	for _, c := range r.Containers {
		b = strconv.AppendInt(b, int64(c.Index), 10)
		b = append(b, c.Name...)
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

// Answers keeps the answers for one request shape (RequestKey) under one
// workload estimate, one per node slot: a number the caller gives each node,
// stable while the node lives (the simulator's node index, the extender
// cache's slot). A is what the caller keeps of Place's answer (the
// simulator keeps less than the extender, which also keeps the reason it
// reports).
//
// The rule, in Get: the answer kept for a slot answers the node in it again
// if and only if the node's Version is the one it was kept at (Keep), and
// the answer was computed under Workload. So a caller changes a node's
// Version whenever anything Place reads of the node changes, and never
// gives a node in a reused slot a Version that an answer was kept at.
//
// Answers has no lock: a caller that shares one between goroutines
// serialises access itself.
type Answers[A any] struct {
	w    *Workload
	kept []kept[A]
	// none is true while nothing is kept: Get need not look.
	none bool
}

type kept[A any] struct {
	// at is the node's Version plus one; 0: nothing kept.
	at     uint64
	answer A
}

// NewAnswers returns no answers yet, to keep under w, with room for slots
// nodes.
func NewAnswers[A any](w *Workload, slots int) *Answers[A] {
	return &Answers[A]{w: w, kept: make([]kept[A], slots), none: true}
}

// For returns as for answers under w: as they are when they were computed
// under w, else emptied (Reset), as an answer under another workload
// estimate answers nothing. as may be nil: new Answers.
func (as *Answers[A]) For(w *Workload) *Answers[A] {
	switch {
	case as == nil:
		return NewAnswers[A](w, 0)
	case as.w != w:
		as.Reset(w)
	}
	return as
}

// Reset forgets every answer, to keep answers under w; the memory stays.
func (as *Answers[A]) Reset(w *Workload) {
	if !as.none {
		clear(as.kept)
	}
	as.w, as.none = w, true
}

// Workload is the estimate the answers are computed under: the one to give
// Place for an answer to keep.
func (as *Answers[A]) Workload() *Workload { return as.w }

// Get returns the answer kept for the node n in slot, or nil when none was
// kept at n's Version.
func (as *Answers[A]) Get(slot int, n *Node) *A {
	if !as.none && slot < len(as.kept) {
		if k := &as.kept[slot]; k.at == n.Version+1 {
			return &k.answer
		}
	}
	return nil
}

// Keep keeps a as the answer for the node n in slot, at n's Version, in
// place of what was kept there, and returns the kept answer (valid until
// the next Keep).
func (as *Answers[A]) Keep(slot int, n *Node, a A) *A {
	if slot >= len(as.kept) {
		as.kept = append(as.kept, make([]kept[A], slot+1-len(as.kept)+len(as.kept)/2)...)
	}
	as.kept[slot] = kept[A]{at: n.Version + 1, answer: a}
	as.none = false
	return &as.kept[slot].answer
}
