package inspect

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteSummary writes one row per node, as gpushare's `kubectl inspect
// gpushare` did: NAME, IPADDRESS, GPUn(Allocated/Total) for each card,
// PENDING(Allocated) when some pod's cards are not known, the node's GPU
// memory, then the cluster's total with a percentage.
func WriteSummary(w io.Writer, c *Cluster) error {
	cards := maxCards(c)
	pending := anyPending(c)
	tw := newTable(w)
	head := []string{"NAME", "IPADDRESS"}
	for i := range cards {
		head = append(head, fmt.Sprintf("GPU%d(Allocated/Total)", i))
	}
	if pending {
		head = append(head, "PENDING(Allocated)")
	}
	head = append(head, "GPU Memory("+string(c.Unit)+")")
	row(tw, head...)
	for i := range c.Nodes {
		n := &c.Nodes[i]
		cells := []string{n.Name, n.Address}
		for j := range cards {
			if j < len(n.Cards) {
				cells = append(cells, fmt.Sprintf("%d/%d", n.Cards[j].Allocated, n.Cards[j].Total))
			} else {
				cells = append(cells, "")
			}
		}
		if pending {
			cells = append(cells, pendingCell(n))
		}
		cells = append(cells, fmt.Sprintf("%d/%d", n.Allocated(), n.Total()))
		row(tw, cells...)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, strings.Repeat("-", 80))
	return writeClusterTotal(w, c)
}

// WriteDetails writes, per node, its cards (model, health, allocation and,
// where measured, memory in use and utilisation), why its cards could not
// be read if so, and the pods on each card, then the cluster's total.
func WriteDetails(w io.Writer, c *Cluster) error {
	for i := range c.Nodes {
		n := &c.Nodes[i]
		fmt.Fprintf(w, "NAME:       %s\nIPADDRESS:  %s\n", n.Name, n.Address)
		if n.Problem != "" {
			fmt.Fprintf(w, "PROBLEM:    %s\n", n.Problem)
		}
		fmt.Fprintln(w)
		tw := newTable(w)
		row(tw, "GPU", "MODEL", "HEALTH", "ALLOCATED/TOTAL", "USED("+string(c.Unit)+")", "UTIL")
		for _, card := range n.Cards {
			used, util := "-", "-"
			if card.Live != nil {
				used = strconv.FormatFloat(float64(card.Live.UsedBytes)/float64(c.Unit.MiB()<<20), 'f', 1, 64)
				util = fmt.Sprintf("%.0f%%", card.Live.Utilization*100)
			}
			row(tw, strconv.Itoa(card.Index), orDash(card.Model), health(card.Healthy), fmt.Sprintf("%d/%d", card.Allocated, card.Total), used, util)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)

		tw = newTable(w)
		head := []string{"NAME", "NAMESPACE"}
		for _, card := range n.Cards {
			head = append(head, fmt.Sprintf("GPU%d(Allocated)", card.Index))
		}
		if len(n.Pending) > 0 {
			head = append(head, "PENDING(Allocated)")
		}
		row(tw, head...)
		for _, p := range podsOf(n) {
			cells := []string{p.name, p.namespace}
			for _, card := range n.Cards {
				cells = append(cells, strconv.FormatInt(p.units[card.Index], 10))
			}
			if len(n.Pending) > 0 {
				cells = append(cells, strconv.FormatInt(p.pending, 10))
			}
			row(tw, cells...)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "Allocated:  %d (%s)\nTotal:      %d\n", n.Allocated(), percent(n.Allocated(), n.Total()), n.Total())
		fmt.Fprintln(w, strings.Repeat("-", 80))
	}
	return writeClusterTotal(w, c)
}

func writeClusterTotal(w io.Writer, c *Cluster) error {
	a, t := c.Totals()
	_, err := fmt.Fprintf(w, "Allocated/Total GPU Memory In Cluster:\n%d/%d (%s)\n", a, t, percent(a, t))
	return err
}

// podRow is one pod of a node, its units per card index and pending.
type podRow struct {
	namespace, name string
	units           map[int]int64
	pending         int64
}

// podsOf lists a node's pods once each, sorted by namespace and name.
func podsOf(n *Node) []*podRow {
	byKey := map[string]*podRow{}
	var out []*podRow
	get := func(p PodShare) *podRow {
		k := p.Namespace + "/" + p.Name
		r, ok := byKey[k]
		if !ok {
			r = &podRow{namespace: p.Namespace, name: p.Name, units: map[int]int64{}}
			byKey[k] = r
			out = append(out, r)
		}
		return r
	}
	for _, card := range n.Cards {
		for _, p := range card.Pods {
			get(p).units[card.Index] += p.Units
		}
	}
	for _, p := range n.Pending {
		get(p).pending += p.Units
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].namespace != out[j].namespace {
			return out[i].namespace < out[j].namespace
		}
		return out[i].name < out[j].name
	})
	return out
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0) }

func row(tw *tabwriter.Writer, cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }

func maxCards(c *Cluster) int {
	m := 0
	for i := range c.Nodes {
		m = max(m, len(c.Nodes[i].Cards))
	}
	return m
}

func anyPending(c *Cluster) bool {
	for i := range c.Nodes {
		if len(c.Nodes[i].Pending) > 0 {
			return true
		}
	}
	return false
}

func pendingCell(n *Node) string {
	var u int64
	for _, p := range n.Pending {
		u += p.Units
	}
	return strconv.FormatInt(u, 10)
}

// percent is allocated over total, rounded down, as a whole percentage.
func percent(allocated, total int64) string {
	if total <= 0 {
		return "0%"
	}
	return strconv.FormatInt(allocated*100/total, 10) + "%"
}

func health(h *bool) string {
	switch {
	case h == nil:
		return "-"
	case *h:
		return "Healthy"
	default:
		return "Unhealthy"
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
