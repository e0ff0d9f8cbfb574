package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
)

// CardUnits is the size of every card in the simulation: the trace counts GPU
// in thousandths of a card, so a card is 1000 units.
const CardUnits = 1000

// Node is one row of a node list.
type Node struct {
	Name      string // sn
	CPUMilli  int64
	MemoryMiB int64
	GPUs      int
	Model     string
}

// Kind classifies a pod by what it asks of the GPUs.
type Kind int

// The kinds of pods, as summary.json counts their failures.
const (
	CPUOnly   Kind = iota // num_gpu = 0
	Shared                // one card, gpu_milli < 1000
	WholeCard             // one whole card
	MultiCard             // several cards
)

func (k Kind) String() string {
	return [...]string{"cpu_only", "shared", "whole_card", "multi_card"}[k]
}

// Pod is one row of a pod list.
type Pod struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	NumGPU    int64
	GPUMilli  int64 // per card
	Models    []string
	// Duration is how long the pod ran in the trace, in seconds
	// (deletion_time - creation_time, at least 1); 0 when the file has no
	// times. Only the churn protocol reads it.
	Duration int64
}

// Kind says what the pod asks of the GPUs.
func (p *Pod) Kind() Kind {
	switch {
	case p.NumGPU == 0:
		return CPUOnly
	case p.NumGPU > 1:
		return MultiCard
	case p.GPUMilli < CardUnits:
		return Shared
	}
	return WholeCard
}

// Demand is the GPU the pod asks for, in thousandths of a card.
func (p *Pod) Demand() int64 { return p.NumGPU * p.GPUMilli }

// Request is the pod as the extender's placement code sees it: one
// container; a whole card is asked as gpu-count, a share as gpu-mem (in
// thousandths of a card), several shares as gpu-mem over gpu-count.
func (p *Pod) Request() *policy.Request {
	r := &policy.Request{Models: p.Models, CPUMilli: p.CPUMilli, MemMiB: p.MemoryMiB}
	switch {
	case p.NumGPU == 0:
	case p.GPUMilli == CardUnits:
		r.Containers = []contract.ContainerRequest{{Name: "main", Count: p.NumGPU}}
	case p.NumGPU == 1:
		r.Containers = []contract.ContainerRequest{{Name: "main", Mem: p.GPUMilli}}
	default:
		r.Containers = []contract.ContainerRequest{{Name: "main", Mem: p.GPUMilli * p.NumGPU, Count: p.NumGPU}}
	}
	return r
}

// ParseError says where a node or pod list is wrong: file, line, column
// (1-based, counted in fields) and the column's name.
type ParseError struct {
	File   string
	Line   int
	Column int    // 0 when the whole line is at fault
	Name   string // the column's header name
	Err    error
}

func (e *ParseError) Error() string {
	if e.Column == 0 {
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s:%d:%d: column %s: %v", e.File, e.Line, e.Column, e.Name, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// table reads a CSV file with a header and finds the named columns.
type table struct {
	file    string
	r       *csv.Reader
	col     map[string]int
	names   []string
	rec     []string
	line    int
	present map[string]bool
	// seen is the line of each key read so far (see key).
	seen map[string]int
}

func openTable(file string, rd io.Reader, required, optional []string) (*table, error) {
	r := csv.NewReader(rd)
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{File: file, Line: 1, Err: errors.New("empty file: want a header line")}
		}
		return nil, csvError(file, err)
	}
	t := &table{file: file, r: r, col: map[string]int{}, present: map[string]bool{}, seen: map[string]int{}, names: slices.Clone(header)}
	for i, h := range header {
		t.col[strings.TrimSpace(h)] = i
	}
	var missing []string
	for _, c := range required {
		if _, ok := t.col[c]; !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, &ParseError{File: file, Line: 1, Err: fmt.Errorf("missing column %s (the header must name %s)", strings.Join(missing, ", "), strings.Join(required, ","))}
	}
	for _, c := range optional {
		_, t.present[c] = t.col[c]
	}
	return t, nil
}

func csvError(file string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ParseError{File: file, Line: pe.Line, Column: pe.Column, Name: "?", Err: pe.Err}
	}
	return fmt.Errorf("%s: %w", file, err)
}

// next reads the next record; ok is false at the end.
func (t *table) next() (bool, error) {
	rec, err := t.r.Read()
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, csvError(t.file, err)
	}
	t.rec = rec
	t.line, _ = t.r.FieldPos(0)
	if len(rec) != len(t.names) {
		return false, &ParseError{File: t.file, Line: t.line, Err: fmt.Errorf("%d fields, the header has %d", len(rec), len(t.names))}
	}
	return true, nil
}

func (t *table) errorf(name, format string, args ...any) error {
	return &ParseError{File: t.file, Line: t.line, Column: t.col[name] + 1, Name: name, Err: fmt.Errorf(format, args...)}
}

func (t *table) str(name string) string {
	i, ok := t.col[name]
	if !ok {
		return ""
	}
	return strings.TrimSpace(t.rec[i])
}

// key reads the row's name of a what (node, pod) from column name: not
// empty, and on no earlier row. why, when set, says why a repeat matters.
func (t *table) key(name, what, why string) (string, error) {
	s := t.str(name)
	if s == "" {
		return "", t.errorf(name, "empty %s name", what)
	}
	if prev, dup := t.seen[s]; dup {
		return "", t.errorf(name, "%s %q already on line %d%s", what, s, prev, why)
	}
	t.seen[s] = t.line
	return s, nil
}

// count reads a whole, non-negative number.
func (t *table) count(name string) (int64, error) {
	s := t.str(name)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, t.errorf(name, "%q is not a whole number", s)
	}
	if v < 0 {
		return 0, t.errorf(name, "%d is negative", v)
	}
	return v, nil
}

// ReadNodes reads a node list (sn,cpu_milli,memory_mib,gpu,model).
func ReadNodes(file string) ([]Node, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseNodes(file, f)
}

// ParseNodes reads a node list from r; file names it in errors.
func ParseNodes(file string, r io.Reader) ([]Node, error) {
	t, err := openTable(file, r, []string{"sn", "cpu_milli", "memory_mib", "gpu", "model"}, nil)
	if err != nil {
		return nil, err
	}
	var out []Node
	for {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		n := Node{Model: t.str("model")}
		if n.Name, err = t.key("sn", "node", ""); err != nil {
			return nil, err
		}
		if n.CPUMilli, err = t.count("cpu_milli"); err != nil {
			return nil, err
		}
		if n.MemoryMiB, err = t.count("memory_mib"); err != nil {
			return nil, err
		}
		gpus, err := t.count("gpu")
		if err != nil {
			return nil, err
		}
		if gpus > 64 {
			return nil, t.errorf("gpu", "%d cards on one node: at most 64", gpus)
		}
		n.GPUs = int(gpus)
		if n.GPUs > 0 && n.Model == "" {
			return nil, t.errorf("model", "empty model on a node with %d cards", n.GPUs)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, &ParseError{File: file, Line: 2, Err: errors.New("no nodes")}
	}
	return out, nil
}

// Models lists the card models of the nodes, sorted.
func Models(nodes []Node) []string {
	var out []string
	for _, n := range nodes {
		if n.GPUs > 0 && !slices.Contains(out, n.Model) {
			out = append(out, n.Model)
		}
	}
	slices.Sort(out)
	return out
}

// ReadPods reads a pod list (name,cpu_milli,memory_mib,num_gpu,gpu_milli and
// optionally gpu_spec); models are the card models gpu_spec may name.
func ReadPods(file string, models []string) ([]Pod, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParsePods(file, f, models)
}

// ParsePods reads a pod list from r; file names it in errors.
func ParsePods(file string, r io.Reader, models []string) ([]Pod, error) {
	t, err := openTable(file, r, []string{"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"}, []string{"gpu_spec", "creation_time", "deletion_time"})
	if err != nil {
		return nil, err
	}
	times := t.present["creation_time"]
	if times != t.present["deletion_time"] {
		return nil, &ParseError{File: file, Line: 1, Err: errors.New("creation_time and deletion_time come together: the header names one of them")}
	}
	var out []Pod
	for {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		var p Pod
		if p.Name, err = t.key("name", "pod", " (the order sorts by name)"); err != nil {
			return nil, err
		}
		if p.CPUMilli, err = t.count("cpu_milli"); err != nil {
			return nil, err
		}
		if p.MemoryMiB, err = t.count("memory_mib"); err != nil {
			return nil, err
		}
		if p.NumGPU, err = t.count("num_gpu"); err != nil {
			return nil, err
		}
		if p.GPUMilli, err = t.count("gpu_milli"); err != nil {
			return nil, err
		}
		switch {
		case p.NumGPU > 64:
			return nil, t.errorf("num_gpu", "%d cards: at most 64", p.NumGPU)
		case p.GPUMilli > CardUnits:
			return nil, t.errorf("gpu_milli", "%d is more than one card (1000): several cards are asked with num_gpu", p.GPUMilli)
		case p.NumGPU > 0 && p.GPUMilli == 0:
			return nil, t.errorf("gpu_milli", "0 with num_gpu %d: a GPU pod asks for 1..1000 per card", p.NumGPU)
		case p.NumGPU == 0 && p.GPUMilli > 0:
			return nil, t.errorf("gpu_milli", "%d with num_gpu 0: a CPU-only pod asks for no GPU", p.GPUMilli)
		}
		if t.present["gpu_spec"] {
			for _, m := range strings.Split(t.str("gpu_spec"), "|") {
				if m = strings.TrimSpace(m); m == "" {
					continue
				}
				if models != nil && !slices.Contains(models, m) {
					return nil, t.errorf("gpu_spec", "unknown model %q: the nodes have %s", m, strings.Join(models, ", "))
				}
				p.Models = append(p.Models, m)
			}
		}
		if times {
			created, err := t.count("creation_time")
			if err != nil {
				return nil, err
			}
			deleted, err := t.count("deletion_time")
			if err != nil {
				return nil, err
			}
			if deleted < created {
				return nil, t.errorf("deletion_time", "%d is before creation_time %d", deleted, created)
			}
			p.Duration = max(1, deleted-created)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, &ParseError{File: file, Line: 2, Err: errors.New("no pods")}
	}
	return out, nil
}
