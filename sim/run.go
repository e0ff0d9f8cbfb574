package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpupack/gpupack/extender/policy"
)

// Options is one invocation of the simulator: one cluster, one workload,
// one or more policies, several seeds.
type Options struct {
	NodesFile, PodsFile string
	Policies            []string
	Seeds               []int64
	Workload            WorkloadSource
	// WorkloadCoverage is the share of pods whose shapes the workload
	// estimate keeps; 0: the policy's own (policy.Policy.WorkloadCoverage).
	WorkloadCoverage float64
	Cold             bool
	Ties             TieBreak
	// Parallel is how many seeds replay at once (each on one goroutine).
	Parallel int
	Out      string
	// Limits also computes, per seed, the bound no placement beats and the
	// best offline packing found (Limits), into limits.json.
	Limits bool
	// ProgramTime, when positive, lets Limits also pack by integer program
	// (ProgramPacking) for up to that long per seed.
	ProgramTime time.Duration
	// Log receives one line per seed; nil: none.
	Log io.Writer

	// Churn runs the churn protocol (RunChurn) at each offered load of
	// Loads, over Horizon with figures from Warmup on; pods without
	// durations get them from DurationsFile (FillDurations).
	Loads           []float64
	Horizon, Warmup time.Duration
	DurationsFile   string
}

// ParseSeeds reads "42-51", "42,45" or a mix ("42-44,50").
func ParseSeeds(s string) ([]int64, error) {
	var out []int64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseInt(strings.TrimSpace(lo), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seeds %q: %q is not a number: want a range (42-51) or a list (42,45)", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(strings.TrimSpace(hi), 10, 64); err != nil {
				return nil, fmt.Errorf("seeds %q: %q is not a number: want a range (42-51) or a list (42,45)", s, hi)
			}
			if b < a {
				return nil, fmt.Errorf("seeds %q: range %d-%d runs backwards", s, a, b)
			}
			if b-a >= 10000 {
				return nil, fmt.Errorf("seeds %q: more than 10000 seeds", s)
			}
		}
		for v := a; v <= b; v++ {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no seeds in %q", s)
	}
	return out, nil
}

// Run replays every policy over every seed and writes the outputs under
// opts.Out: summary.json and placements-<seed>.csv (in Out/<policy>/ when
// several policies run), allocation.svg with every policy's curve, and with
// opts.Limits limits.json. It returns the summaries, one per policy, and
// the limits (nil without opts.Limits).
func Run(opts Options) ([]*Summary, *LimitsSummary, error) {
	nodes, pods, err := readTrace(&opts)
	if err != nil {
		return nil, nil, err
	}
	if len(opts.Policies) == 0 {
		opts.Policies = []string{"default"}
	}
	pols := make([]*policy.Policy, len(opts.Policies))
	for i, name := range opts.Policies {
		if pols[i], err = policy.Get(policy.Name(name)); err != nil {
			return nil, nil, err
		}
	}
	if opts.Parallel <= 0 {
		opts.Parallel = runtime.GOMAXPROCS(0)
	}
	if opts.Ties == "" {
		opts.Ties = DefaultTies
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, nil, err
	}
	var summaries []*Summary
	var series []Series
	for i, p := range pols {
		dir := opts.Out
		if len(pols) > 1 {
			dir = filepath.Join(opts.Out, opts.Policies[i])
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, nil, err
			}
		}
		name := string(p.Name)
		if opts.Policies[i] != name {
			name = opts.Policies[i] + " (" + name + ")"
		}
		s, err := runPolicy(opts, nodes, pods, p, name, dir)
		if err != nil {
			return nil, nil, err
		}
		summaries = append(summaries, s)
		series = append(series, Series{Name: name, Curve: s.Curve, Label: fmt.Sprintf("unallocated %.2f%% at 100%%", s.Mean.UnallocatedAt100)})
	}
	f, err := os.Create(filepath.Join(opts.Out, "allocation.svg"))
	if err != nil {
		return nil, nil, err
	}
	title := fmt.Sprintf("%s: GPU allocation, mean over %d seeds", filepath.Base(opts.PodsFile), len(opts.Seeds))
	if err := PlotSVG(f, title, series); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := f.Close(); err != nil {
		return nil, nil, err
	}
	if !opts.Limits {
		return summaries, nil, nil
	}
	limits, err := runLimits(opts, nodes, pods)
	return summaries, limits, err
}

func runPolicy(opts Options, nodes []Node, pods []Pod, p *policy.Policy, name, dir string) (*Summary, error) {
	type out struct {
		fig   SeedFigures
		curve []Point
		err   error
	}
	outs := make([]out, len(opts.Seeds))
	var logMu sync.Mutex
	forEach(len(opts.Seeds), opts.Parallel, func(i int) {
		cfg := opts.config(nodes, pods, p, opts.Seeds[i])
		r, err := Replay(cfg)
		if err == nil {
			err = WritePlacementsFile(dir, &cfg, r)
		}
		if err != nil {
			outs[i].err = err
			return
		}
		outs[i] = out{fig: Measure(&cfg, r), curve: Curve(r)}
		if opts.Log != nil {
			f := outs[i].fig
			logMu.Lock()
			fmt.Fprintf(opts.Log, "%s seed %d: unallocated %.2f%% at 100%%, %.2f%% at 130%%; decision p99 %.3f ms; %.1f s\n", name, f.Seed, f.UnallocatedAt100, f.UnallocatedAt130, f.DecisionP99Ms, f.WallSeconds)
			logMu.Unlock()
		}
	})
	s := &Summary{Protocol: ProtocolText, Nodes: opts.NodesFile, Pods: opts.PodsFile, Policy: name, Workload: string(opts.Workload), Coverage: p.WorkloadCoverage(opts.WorkloadCoverage), Cold: opts.Cold, Ties: string(opts.Ties), Capacity: Capacity(nodes)}
	if !p.NeedsWorkload {
		s.Workload = "none (the policy reads no workload)"
	}
	var figs []SeedFigures
	var curves [][]Point
	for _, o := range outs {
		if o.err != nil {
			return nil, o.err
		}
		figs = append(figs, o.fig)
		curves = append(curves, o.curve)
	}
	sort.Slice(figs, func(a, b int) bool { return figs[a].Seed < figs[b].Seed })
	Summarize(s, figs, curves)
	return s, WriteSummary(dir, s)
}

// RunChurn runs the churn protocol for every policy, load and seed of opts
// and writes opts.Out/churn.json.
func RunChurn(opts Options) (*ChurnSummary, error) {
	nodes, pods, err := readTrace(&opts)
	if err != nil {
		return nil, err
	}
	if opts.DurationsFile != "" {
		from, err := ReadPods(opts.DurationsFile, Models(nodes))
		if err != nil {
			return nil, err
		}
		if err := FillDurations(pods, from, 1); err != nil {
			return nil, err
		}
	}
	if len(opts.Policies) == 0 {
		opts.Policies = []string{"default"}
	}
	if len(opts.Loads) == 0 {
		return nil, fmt.Errorf("no offered load")
	}
	if opts.Parallel <= 0 {
		opts.Parallel = runtime.GOMAXPROCS(0)
	}
	sum := &ChurnSummary{Protocol: ChurnProtocolText, Nodes: opts.NodesFile, Pods: opts.PodsFile, Durations: opts.DurationsFile,
		HorizonS: opts.Horizon.Seconds(), WarmupS: opts.Warmup.Seconds()}
	// One job per run (policy and load) and seed.
	type job struct {
		run, seed int
		policy    *policy.Policy
	}
	var jobs []job
	for _, name := range opts.Policies {
		p, err := policy.Get(policy.Name(name))
		if err != nil {
			return nil, err
		}
		for _, load := range opts.Loads {
			sum.Runs = append(sum.Runs, ChurnRun{Policy: name, Load: load, Seeds: make([]ChurnSeed, len(opts.Seeds))})
			for i := range opts.Seeds {
				jobs = append(jobs, job{len(sum.Runs) - 1, i, p})
			}
		}
	}
	errs := make([]error, len(jobs))
	var logMu sync.Mutex
	forEach(len(jobs), opts.Parallel, func(j int) {
		run, seed := &sum.Runs[jobs[j].run], opts.Seeds[jobs[j].seed]
		r, err := Churn(ChurnConfig{
			Config: opts.config(nodes, pods, jobs[j].policy, seed),
			Load:   run.Load, Horizon: opts.Horizon.Seconds(), Warmup: opts.Warmup.Seconds(),
		})
		if err != nil {
			errs[j] = fmt.Errorf("%s at %.0f%% offered, seed %d: %w", run.Policy, run.Load*100, seed, err)
			return
		}
		run.Seeds[jobs[j].seed] = *r
		if opts.Log != nil {
			logMu.Lock()
			fmt.Fprintf(opts.Log, "%s at %.0f%% offered, seed %d: %.2f%% allocated (%.2f%% present), %.0f pods waiting; %d arrivals; %.1f s\n",
				run.Policy, run.Load*100, seed, r.AllocatedPct, r.PresentPct, r.WaitingPods, r.Arrivals, r.WallSeconds)
			logMu.Unlock()
		}
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	for i := range sum.Runs {
		sum.Runs[i].summarize()
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	return sum, os.WriteFile(filepath.Join(opts.Out, "churn.json"), append(b, '\n'), 0o644)
}

// forEach calls fn(0..n-1), at most workers at once (each on a goroutine of
// its own), and returns when every call has.
func forEach(n, workers int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// config is one run of policy p at seed under opts' workload estimate,
// cache and tie-break.
func (opts *Options) config(nodes []Node, pods []Pod, p *policy.Policy, seed int64) Config {
	return Config{Nodes: nodes, Pods: pods, Policy: p, Seed: seed, Workload: opts.Workload, WorkloadCoverage: opts.WorkloadCoverage, Cold: opts.Cold, Ties: opts.Ties}
}

// readTrace reads opts' node and pod lists.
func readTrace(opts *Options) ([]Node, []Pod, error) {
	nodes, err := ReadNodes(opts.NodesFile)
	if err != nil {
		return nil, nil, err
	}
	pods, err := ReadPods(opts.PodsFile, Models(nodes))
	if err != nil {
		return nil, nil, err
	}
	return nodes, pods, nil
}
