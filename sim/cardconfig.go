package sim

import (
	"bytes"
	"fmt"
	"slices"
)

// cardConfigs is one node type's cards in the bound's program, for a type
// some share fits: the pods that take whole cards, the share sizes its
// cards may hold, and the configurations of one card generated so far.
//
// A configuration is how many shares of each size one card holds (their
// sizes summing to at most a card). z_t_j is how many of the type's cards
// hold configuration j, and the rows say:
//
//   - cards: Σ g_s·x_ts over pods of whole cards + Σ_j z_t_j ≤ C_t·N_t;
//   - for each share size m: Σ g_s·x_ts over shapes of shares of m ≤
//     Σ_j a_jm·z_t_j, where a_jm is configuration j's shares of m.
//
// Every placement gives such z (each card with shares has the
// configuration it holds), so the rows keep the program a relaxation. They
// are what the cuts only approximate: that a card of a 0.47 pair strands
// 0.06 unless a share of at most 0.06 is there to fill it.
type cardConfigs struct {
	t     int          // the type's index, in the columns' names
	count int64        // the type's cards, over all its nodes
	whole bytes.Buffer // the cards row's x terms
	sizes []int64      // share sizes, thousandths of a card
	most  []int64      // per size: the most shares the type's cards may hold
	terms []bytes.Buffer
	// The configurations generated so far: shares per size.
	configSet
	row int // 0-based number of the cards row in the last text; the sizes' rows follow
}

// add puts one x column, of shape s (index si), in the type's rows.
func (c *cardConfigs) add(s *shape, si int) {
	if s.milli >= CardUnits {
		term(&c.whole, float64(s.cards), "x", c.t, si)
		return
	}
	// A pod of several shares puts one on each of several cards: as
	// shares, it is that many.
	i := slices.Index(c.sizes, s.milli)
	if i < 0 {
		i = len(c.sizes)
		c.sizes, c.most = append(c.sizes, s.milli), append(c.most, 0)
		c.terms = append(c.terms, bytes.Buffer{})
	}
	term(&c.terms[i], float64(s.cards), "x", c.t, si)
	c.most[i] += s.cards * s.count
}

// seed starts the configurations: for each size, a card of as many such
// shares as it holds.
func (c *cardConfigs) seed() {
	for i := range c.sizes {
		a := make([]int64, len(c.sizes))
		a[i] = c.holds(i)
		c.keep(a)
	}
}

// holds is the most shares of size index i one card may hold: as many as
// fit it, and no more than there are.
func (c *cardConfigs) holds(i int) int64 { return min(c.most[i], CardUnits/c.sizes[i]) }

// configSet is the configurations of a card or a node generated so far,
// each a count per share size or shape, each kept once.
type configSet struct {
	configs [][]int64
	seen    map[string]bool
}

// keep adds a when it is new, and tells whether it was.
func (c *configSet) keep(a []int64) bool {
	k := fmt.Sprint(a)
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if c.seen[k] {
		return false
	}
	c.seen[k] = true
	c.configs = append(c.configs, a)
	return true
}

// writeRows writes the type's rows, numbering them from row, and returns
// the next number.
func (c *cardConfigs) writeRows(w *bytes.Buffer, row int) int {
	c.row = row
	fmt.Fprintf(w, " k%d:%s", c.t, c.whole.String())
	for j := range c.configs {
		fmt.Fprintf(w, " + 1 z_%d_%d", c.t, j)
	}
	fmt.Fprintf(w, " <= %d\n", c.count)
	for i := range c.sizes {
		fmt.Fprintf(w, " k%d_%d:%s", c.t, i, c.terms[i].String())
		for j, a := range c.configs {
			if a[i] > 0 {
				fmt.Fprintf(w, " - %d z_%d_%d", a[i], c.t, j)
			}
		}
		w.WriteString(" <= 0\n")
	}
	return row + 1 + len(c.sizes)
}

// priceEpsilon is the reduced cost, in thousandths of a card, below which
// a configuration is not worth adding: the solver's rounding.
const priceEpsilon = 1e-6

// price finds the configuration of largest reduced cost under the duals
// of the last solve (indexed by row): the shares' duals summed, less the
// cards row's. It adds it when that is positive and it is new, and
// returns the reduced cost either way.
//
// It is a bounded knapsack over one card, solved exactly: each size's
// copies are split in powers of two, then a 0/1 knapsack over the card's
// thousandths.
func (c *cardConfigs) price(duals []float64) (float64, bool) {
	type item struct {
		size, copies int
		weight       int64
		value        float64
	}
	var items []item
	for i, m := range c.sizes {
		v := duals[c.row+1+i]
		if v <= 0 {
			continue
		}
		for n, q := c.holds(i), int64(1); n > 0; q *= 2 {
			q = min(q, n)
			items = append(items, item{i, int(q), q * m, float64(q) * v})
			n -= q
		}
	}
	best := make([]float64, CardUnits+1)
	took := make([][]bool, len(items))
	for k, it := range items {
		took[k] = make([]bool, CardUnits+1)
		for w := int64(CardUnits); w >= it.weight; w-- {
			if v := best[w-it.weight] + it.value; v > best[w] {
				best[w], took[k][w] = v, true
			}
		}
	}
	w := int64(0)
	for x := range best {
		if best[x] > best[w] {
			w = int64(x)
		}
	}
	rc := best[w] - duals[c.row]
	if rc <= priceEpsilon {
		return rc, false
	}
	a := make([]int64, len(c.sizes))
	for k := len(items) - 1; k >= 0; k-- {
		if took[k][w] {
			a[items[k].size] += int64(items[k].copies)
			w -= items[k].weight
		}
	}
	return rc, c.keep(a)
}
