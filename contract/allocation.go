package contract

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Allocation is what a pod got: container index (position in
// pod.spec.containers) -> card index -> memory units on that card. It is
// stored as JSON in AnnotationAllocation, e.g. {"0":{"1":4},"1":{"1":2}}.
type Allocation map[int]map[int]int64

// ParseAllocation decodes and checks an AnnotationAllocation value.
func ParseAllocation(s string) (Allocation, error) {
	var a Allocation
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, fmt.Errorf("allocation %q is not {\"<container>\":{\"<card>\":<units>}}: %w", s, err)
	}
	if len(a) == 0 {
		return nil, fmt.Errorf("allocation %q is empty", s)
	}
	for c, cards := range a {
		if c < 0 {
			return nil, fmt.Errorf("allocation %q: negative container index %d", s, c)
		}
		if len(cards) == 0 {
			return nil, fmt.Errorf("allocation %q: container %d has no card", s, c)
		}
		for card, units := range cards {
			if card < 0 || units <= 0 {
				return nil, fmt.Errorf("allocation %q: container %d has card %d with %d units; want index >= 0 and units > 0", s, c, card, units)
			}
		}
	}
	return a, nil
}

// String encodes the allocation as its annotation value (keys sorted, as
// encoding/json does for maps).
func (a Allocation) String() string {
	b, err := json.Marshal(a)
	if err != nil { // cannot happen for map[int]map[int]int64
		panic(err)
	}
	return string(b)
}

// Total is the memory of the whole pod, in units.
func (a Allocation) Total() int64 {
	var t int64
	for _, cards := range a {
		for _, u := range cards {
			t += u
		}
	}
	return t
}

// PerCard sums the allocation per card index.
func (a Allocation) PerCard() map[int]int64 {
	m := make(map[int]int64)
	for _, cards := range a {
		for card, u := range cards {
			m[card] += u
		}
	}
	return m
}

// Cards lists the card indices used, ascending.
func (a Allocation) Cards() []int {
	per := a.PerCard()
	out := make([]int, 0, len(per))
	for c := range per {
		out = append(out, c)
	}
	sort.Ints(out)
	return out
}

// Clone returns a deep copy.
func (a Allocation) Clone() Allocation {
	out := make(Allocation, len(a))
	for c, cards := range a {
		m := make(map[int]int64, len(cards))
		for k, v := range cards {
			m[k] = v
		}
		out[c] = m
	}
	return out
}
