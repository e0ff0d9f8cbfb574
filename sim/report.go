package sim

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Failures counts failed pods by kind.
type Failures struct {
	Shared    float64 `json:"shared"`
	WholeCard float64 `json:"whole_card"`
	MultiCard float64 `json:"multi_card"`
	CPUOnly   float64 `json:"cpu_only"`
}

func (f *Failures) add(k Kind) {
	switch k {
	case Shared:
		f.Shared++
	case WholeCard:
		f.WholeCard++
	case MultiCard:
		f.MultiCard++
	case CPUOnly:
		f.CPUOnly++
	}
}

// Figures are the measures of one replay, or their mean or standard
// deviation over seeds.
type Figures struct {
	// UnallocatedAt100 and At130: 100 - GPU placed as % of capacity, read
	// after the last pod whose arrival keeps the GPU asked for at or below
	// 100% (130%) of capacity.
	UnallocatedAt100 float64 `json:"unallocated_pct_at_100"`
	UnallocatedAt130 float64 `json:"unallocated_pct_at_130"`
	// ArrivedAtFirstFailure is the GPU asked for (% of capacity), the
	// failed pod included, when the first pod failed; null if none failed.
	ArrivedAtFirstFailure *float64 `json:"arrived_pct_at_first_failure"`
	FailedAt100           Failures `json:"failed_at_100"`
	FailedAt130           Failures `json:"failed_at_130"`
	// Decision speed: pods decided per second of decision time, and the
	// per-pod decision time (every node rated, best chosen).
	DecisionsPerSecond float64 `json:"decisions_per_second"`
	DecisionP50Ms      float64 `json:"decision_p50_ms"`
	DecisionP99Ms      float64 `json:"decision_p99_ms"`
}

// SeedFigures are one seed's figures.
type SeedFigures struct {
	Seed int64 `json:"seed"`
	Pods int   `json:"pods"`
	Figures
	WallSeconds float64 `json:"wall_seconds"`
}

// Point is one point of the allocation curve.
type Point struct {
	Arrived   float64 `json:"arrived_pct"`
	Allocated float64 `json:"allocated_pct"`
}

// Summary is summary.json.
type Summary struct {
	Protocol string        `json:"protocol"`
	Nodes    string        `json:"nodes"`
	Pods     string        `json:"pods"`
	Policy   string        `json:"policy"`
	Workload string        `json:"workload"`
	Coverage float64       `json:"coverage"`
	Cold     bool          `json:"cold"`
	Ties     string        `json:"ties"`
	Capacity int64         `json:"capacity_milli"`
	Seeds    []SeedFigures `json:"seeds"`
	Mean     Figures       `json:"mean"`
	// Std is the sample standard deviation over seeds (n-1).
	Std Figures `json:"std"`
	// Curve is the allocation at every 1% of arrived workload, mean over seeds.
	Curve []Point `json:"curve"`
}

// ProtocolText names the protocol in summary.json.
const ProtocolText = "openb (Weng et al., ATC'23): pods sorted by name, shuffled with math/rand(seed), inflated to 130% of GPU capacity by copies drawn with replacement; one pod at a time, no departures; CPU, memory and gpu_spec apply"

// Measure computes one replay's figures.
func Measure(cfg *Config, r *Result) SeedFigures {
	f := SeedFigures{Seed: r.Seed, Pods: len(r.Placements), WallSeconds: r.Wall.Seconds()}
	pct := func(v int64) float64 { return float64(v) * 100 / float64(r.Capacity) }
	f.UnallocatedAt100, f.UnallocatedAt130 = 100, 100
	times := make([]time.Duration, 0, len(r.Placements))
	var total time.Duration
	for _, p := range r.Placements {
		kind := cfg.Pods[p.Pod].Kind()
		within100 := p.Arrived*100 <= r.Capacity*100
		within130 := p.Arrived*100 <= r.Capacity*Inflation
		if within100 {
			f.UnallocatedAt100 = 100 - pct(p.Allocated)
		}
		if within130 {
			f.UnallocatedAt130 = 100 - pct(p.Allocated)
		}
		if p.Node < 0 {
			if f.ArrivedAtFirstFailure == nil {
				v := pct(p.Arrived)
				f.ArrivedAtFirstFailure = &v
			}
			if within100 {
				f.FailedAt100.add(kind)
			}
			if within130 {
				f.FailedAt130.add(kind)
			}
		}
		times = append(times, p.Decision)
		total += p.Decision
	}
	slices.Sort(times)
	if n := len(times); n > 0 {
		f.DecisionP50Ms = ms(times[(n-1)*50/100])
		f.DecisionP99Ms = ms(times[(n-1)*99/100])
		if total > 0 {
			f.DecisionsPerSecond = float64(n) / total.Seconds()
		}
	}
	return f
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// Curve samples a replay's allocation at every 1% of arrived workload, up
// to Inflation%: the allocation after the last pod arrived at or below it.
func Curve(r *Result) []Point {
	out := make([]Point, 0, Inflation+1)
	i := 0
	var alloc int64
	for g := 0; g <= Inflation; g++ {
		for i < len(r.Placements) && r.Placements[i].Arrived*100 <= r.Capacity*int64(g) {
			alloc = r.Placements[i].Allocated
			i++
		}
		out = append(out, Point{Arrived: float64(g), Allocated: float64(alloc) * 100 / float64(r.Capacity)})
	}
	return out
}

// Summarize folds the seeds' figures and curves into a summary.
func Summarize(s *Summary, seeds []SeedFigures, curves [][]Point) {
	s.Seeds = seeds
	fields := []struct {
		get func(*Figures) *float64
	}{
		{func(f *Figures) *float64 { return &f.UnallocatedAt100 }},
		{func(f *Figures) *float64 { return &f.UnallocatedAt130 }},
		{func(f *Figures) *float64 { return &f.FailedAt100.Shared }},
		{func(f *Figures) *float64 { return &f.FailedAt100.WholeCard }},
		{func(f *Figures) *float64 { return &f.FailedAt100.MultiCard }},
		{func(f *Figures) *float64 { return &f.FailedAt100.CPUOnly }},
		{func(f *Figures) *float64 { return &f.FailedAt130.Shared }},
		{func(f *Figures) *float64 { return &f.FailedAt130.WholeCard }},
		{func(f *Figures) *float64 { return &f.FailedAt130.MultiCard }},
		{func(f *Figures) *float64 { return &f.FailedAt130.CPUOnly }},
		{func(f *Figures) *float64 { return &f.DecisionsPerSecond }},
		{func(f *Figures) *float64 { return &f.DecisionP50Ms }},
		{func(f *Figures) *float64 { return &f.DecisionP99Ms }},
	}
	for _, fl := range fields {
		var vs []float64
		for i := range seeds {
			vs = append(vs, *fl.get(&seeds[i].Figures))
		}
		*fl.get(&s.Mean), *fl.get(&s.Std) = meanStd(vs)
	}
	var first []float64
	for i := range seeds {
		if v := seeds[i].ArrivedAtFirstFailure; v != nil {
			first = append(first, *v)
		}
	}
	if len(first) > 0 {
		m, sd := meanStd(first)
		s.Mean.ArrivedAtFirstFailure, s.Std.ArrivedAtFirstFailure = &m, &sd
	}
	if len(curves) > 0 {
		s.Curve = make([]Point, len(curves[0]))
		for g := range s.Curve {
			s.Curve[g].Arrived = curves[0][g].Arrived
			for _, c := range curves {
				s.Curve[g].Allocated += c[g].Allocated / float64(len(curves))
			}
		}
	}
}

// meanStd is the mean and the sample standard deviation (n-1; 0 for one value).
func meanStd(vs []float64) (float64, float64) {
	if len(vs) == 0 {
		return 0, 0
	}
	var sum float64
	for _, v := range vs {
		sum += v
	}
	mean := sum / float64(len(vs))
	if len(vs) == 1 {
		return mean, 0
	}
	var ss float64
	for _, v := range vs {
		ss += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(ss / float64(len(vs)-1))
}

// WriteSummary writes dir/summary.json.
func WriteSummary(dir string, s *Summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "summary.json"), append(b, '\n'), 0o644)
}

// PlacementsHeader is the header of placements-<seed>.csv.
const PlacementsHeader = "seq,pod,num_gpu,gpu_milli,cpu_milli,memory_mib,node,gpus"

// WritePlacements writes one replay's placements as CSV: one row per
// arriving pod, enough to recheck every placement.
func WritePlacements(w io.Writer, cfg *Config, r *Result) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(strings.Split(PlacementsHeader, ",")); err != nil {
		return err
	}
	row := make([]string, 8)
	var cards []string
	for _, p := range r.Placements {
		pod := &cfg.Pods[p.Pod]
		row[0] = strconv.Itoa(p.Seq)
		row[1] = pod.Name
		row[2] = strconv.FormatInt(pod.NumGPU, 10)
		row[3] = strconv.FormatInt(pod.GPUMilli, 10)
		row[4] = strconv.FormatInt(pod.CPUMilli, 10)
		row[5] = strconv.FormatInt(pod.MemoryMiB, 10)
		row[6], row[7] = "", ""
		if p.Node >= 0 {
			row[6] = cfg.Nodes[p.Node].Name
			cards = cards[:0]
			for _, c := range p.Cards {
				cards = append(cards, strconv.Itoa(c))
			}
			row[7] = strings.Join(cards, "|")
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WritePlacementsFile writes dir/placements-<seed>.csv.
func WritePlacementsFile(dir string, cfg *Config, r *Result) error {
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("placements-%d.csv", r.Seed)))
	if err != nil {
		return err
	}
	if err := WritePlacements(f, cfg, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
