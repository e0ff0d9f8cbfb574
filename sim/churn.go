package sim

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sort"
	"time"

	"github.com/gpupack/gpupack/contract"
)

// ChurnProtocolText names the churn protocol in churn.json; sim/README.md
// ("Churn") says it in full.
const ChurnProtocolText = "gpupack churn: pods drawn uniformly with replacement from the workload (math/rand(seed)), arriving as a Poisson process whose rate offers the load (rate = load x GPU capacity / mean of demand x duration), each running its trace duration (deletion_time - creation_time); the run starts in that process's steady state (a Poisson number of pods present, drawn in proportion to duration, each with a uniform share of its duration left, submitted at time 0); a pod that fits nowhere waits and is retried, in arrival order, on the node each departure frees; figures are time averages over [warm-up, horizon]"

// ChurnConfig is one run of the churn protocol (ChurnProtocolText): pods
// arrive and leave, and pods that fit nowhere wait and are retried.
type ChurnConfig struct {
	// Config gives the cluster, the workload (every pod with a Duration),
	// the policy, the seed, the workload estimate and the tie-break;
	// Sequence is not read.
	Config
	// Load is the GPU offered, as a fraction of the cluster's (1: 100%).
	Load float64
	// Horizon is how long the run lasts, and Warmup when its figures start
	// being read; both in simulated seconds.
	Horizon, Warmup float64
}

// ChurnFigures are what one churn run measured over [Warmup, Horizon], or
// their mean or standard deviation over seeds.
type ChurnFigures struct {
	// AllocatedPct is the GPU placed, time-averaged, as % of capacity;
	// PresentPct the GPU of the pods present (placed or waiting), which is
	// the offered load as it came out of the draws.
	AllocatedPct float64 `json:"allocated_pct"`
	PresentPct   float64 `json:"present_pct"`
	// WaitingPods is the number of pods waiting, time-averaged.
	WaitingPods float64 `json:"waiting_pods"`
	// Kinds are the pods that arrived in the window, by kind.
	Kinds map[string]*KindWait `json:"by_kind"`
}

// KindWait is how the pods of one kind that arrived in the window fared.
type KindWait struct {
	Arrived float64 `json:"arrived"`
	// NeverPlacedPct is the share still waiting at the horizon.
	NeverPlacedPct float64 `json:"never_placed_pct"`
	// Waits of the pods placed, in seconds: mean, median, 95th percentile.
	// A pod that fits at once waits 0.
	WaitMeanS float64 `json:"wait_mean_s"`
	WaitP50S  float64 `json:"wait_p50_s"`
	WaitP95S  float64 `json:"wait_p95_s"`
	// WaitedPct is the share of those placed that had to wait at all.
	WaitedPct float64 `json:"waited_pct"`
}

// ChurnSeed is one seed's churn figures.
type ChurnSeed struct {
	Seed int64 `json:"seed"`
	ChurnFigures
	// Arrivals and Departures count the events of the whole run; Initial
	// is the population it started with.
	Initial     int     `json:"initial_pods"`
	Arrivals    int     `json:"arrivals"`
	Departures  int     `json:"departures"`
	WallSeconds float64 `json:"wall_seconds"`
}

// running is a pod present in a churn run.
type running struct {
	pod, seq int
	arrive   float64
	// left is how long it runs once placed.
	left float64
	// Once placed: where, what it got, how long it waited, when it leaves.
	placed bool
	node   int
	alloc  contract.Allocation
	wait   float64
	end    float64
}

// departures orders the placed pods by when they leave (then by arrival,
// so that a run repeats exactly).
type departures []*running

func (d departures) Len() int { return len(d) }
func (d departures) Less(i, j int) bool {
	if d[i].end != d[j].end {
		return d[i].end < d[j].end
	}
	return d[i].seq < d[j].seq
}
func (d departures) Swap(i, j int) { d[i], d[j] = d[j], d[i] }
func (d *departures) Push(x any)   { *d = append(*d, x.(*running)) }
func (d *departures) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// Churn runs the churn protocol once: see ChurnProtocolText.
func Churn(cfg ChurnConfig) (*ChurnSeed, error) {
	start := time.Now()
	switch {
	case !(cfg.Load > 0) || math.IsInf(cfg.Load, 0):
		return nil, fmt.Errorf("offered load %v: want a positive fraction of capacity", cfg.Load)
	case !(cfg.Horizon > 0) || math.IsInf(cfg.Horizon, 0):
		return nil, fmt.Errorf("horizon %v s: want a positive time", cfg.Horizon)
	case cfg.Warmup < 0 || cfg.Warmup >= cfg.Horizon:
		return nil, fmt.Errorf("warm-up %v s: want 0 or more and less than the horizon (%v s)", cfg.Warmup, cfg.Horizon)
	case len(cfg.Pods) == 0:
		return nil, fmt.Errorf("no pods")
	}
	var gpuSeconds, seconds float64
	for i := range cfg.Pods {
		p := &cfg.Pods[i]
		if p.Duration <= 0 {
			return nil, fmt.Errorf("pod %s has no duration: the churn protocol needs the trace's creation and deletion times", p.Name)
		}
		gpuSeconds += float64(p.Demand()) * float64(p.Duration)
		seconds += float64(p.Duration)
	}
	if gpuSeconds == 0 {
		return nil, fmt.Errorf("no pod asks for GPU: no load can be offered")
	}
	sc, err := newScheduler(&cfg.Config)
	if err != nil {
		return nil, err
	}
	capacity := float64(Capacity(cfg.Nodes))
	n := float64(len(cfg.Pods))
	// Arrivals per second that offer Load x capacity: each arrival brings
	// E[demand x duration] of GPU-seconds.
	rate := cfg.Load * capacity / (gpuSeconds / n)
	rng := rand.New(rand.NewSource(cfg.Seed))

	out := &ChurnSeed{Seed: cfg.Seed}
	var (
		now, allocated, waitingGPU float64
		seq                        int
		placed                     departures
		waiting                    []*running
		// Integrals over the window.
		allocInt, presentInt, waitInt float64
		arrivedIn                     = map[Kind][]*running{}
	)
	advance := func(to float64) {
		lo, hi := max(now, cfg.Warmup), min(to, cfg.Horizon)
		if hi > lo {
			allocInt += allocated * (hi - lo)
			presentInt += (allocated + waitingGPU) * (hi - lo)
			waitInt += float64(len(waiting)) * (hi - lo)
		}
		now = to
	}
	place := func(r *running, node int, alloc contract.Allocation) {
		sc.bind(r.pod, node, alloc)
		r.placed, r.node, r.alloc, r.wait, r.end = true, node, alloc, now-r.arrive, now+r.left
		allocated += float64(cfg.Pods[r.pod].Demand())
		heap.Push(&placed, r)
	}
	submit := func(r *running) {
		sc.arrive(r.pod, r.seq)
		if node, alloc := sc.choose(r.pod, r.seq); node >= 0 {
			place(r, node, alloc)
			return
		}
		waiting = append(waiting, r)
		waitingGPU += float64(cfg.Pods[r.pod].Demand())
	}

	// The run starts in the steady state of its arrivals: as many pods as
	// are present on average (Poisson, mean rate x E[duration]), each drawn
	// in proportion to its duration (the longer a pod runs, the likelier it
	// is present), with a uniform share of its duration left. They are
	// submitted at time 0 in the order drawn.
	cum := make([]float64, len(cfg.Pods))
	var acc float64
	for i := range cfg.Pods {
		acc += float64(cfg.Pods[i].Duration)
		cum[i] = acc
	}
	present := 0
	for t := rng.ExpFloat64(); t <= rate*seconds/n; t += rng.ExpFloat64() {
		present++
	}
	for range present {
		pi := sort.SearchFloat64s(cum, rng.Float64()*acc)
		pi = min(pi, len(cfg.Pods)-1)
		r := &running{pod: pi, seq: seq, left: float64(cfg.Pods[pi].Duration) * (1 - rng.Float64())}
		seq++
		submit(r)
	}
	out.Initial = present

	next := rng.ExpFloat64() / rate
	for {
		leave := math.Inf(1)
		if len(placed) > 0 {
			leave = placed[0].end
		}
		t := min(next, leave)
		if t > cfg.Horizon {
			break
		}
		advance(t)
		if leave <= next {
			r := heap.Pop(&placed).(*running)
			sc.release(r.pod, r.node, r.alloc)
			allocated -= float64(cfg.Pods[r.pod].Demand())
			out.Departures++
			// Only the freed node changed, and every waiting pod fitted
			// nowhere before: each is retried there, in arrival order, as
			// kube-scheduler retries unschedulable pods on a pod's deletion.
			kept := waiting[:0]
			for _, w := range waiting {
				if alloc := sc.fitsOn(w.pod, w.seq, r.node); alloc != nil {
					waitingGPU -= float64(cfg.Pods[w.pod].Demand())
					place(w, r.node, alloc)
					continue
				}
				kept = append(kept, w)
			}
			clear(waiting[len(kept):])
			waiting = kept
			continue
		}
		pi := rng.Intn(len(cfg.Pods))
		r := &running{pod: pi, seq: seq, arrive: now, left: float64(cfg.Pods[pi].Duration)}
		seq++
		out.Arrivals++
		if now >= cfg.Warmup {
			k := cfg.Pods[pi].Kind()
			arrivedIn[k] = append(arrivedIn[k], r)
		}
		submit(r)
		next = now + rng.ExpFloat64()/rate
	}
	advance(cfg.Horizon)

	window := cfg.Horizon - cfg.Warmup
	out.AllocatedPct = allocInt / window / capacity * 100
	out.PresentPct = presentInt / window / capacity * 100
	out.WaitingPods = waitInt / window
	out.Kinds = map[string]*KindWait{}
	for _, k := range []Kind{Shared, WholeCard, MultiCard, CPUOnly} {
		rs := arrivedIn[k]
		kw := &KindWait{Arrived: float64(len(rs))}
		var waits []float64
		for _, r := range rs {
			if r.placed {
				waits = append(waits, r.wait)
			}
		}
		if len(rs) > 0 {
			kw.NeverPlacedPct = float64(len(rs)-len(waits)) * 100 / float64(len(rs))
		}
		if len(waits) > 0 {
			slices.Sort(waits)
			var sum float64
			waited := 0
			for _, w := range waits {
				sum += w
				if w > 0 {
					waited++
				}
			}
			kw.WaitMeanS = sum / float64(len(waits))
			kw.WaitP50S = quantile(waits, 0.50)
			kw.WaitP95S = quantile(waits, 0.95)
			kw.WaitedPct = float64(waited) * 100 / float64(len(waits))
		}
		out.Kinds[k.String()] = kw
	}
	out.WallSeconds = time.Since(start).Seconds()
	return out, nil
}

// quantile is the q-quantile of sorted values, the nearest rank.
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// FillDurations gives every pod without a Duration one from from (a pod
// list with the trace's times, such as the default workload of which the
// variants are drawn): the same-named pod's if from has it and it asks for
// the same GPU, else one drawn (seeded by seed) from from's pods of the
// same kind.
func FillDurations(pods []Pod, from []Pod, seed int64) error {
	byName := map[string]*Pod{}
	byKind := map[Kind][]int64{}
	for i := range from {
		p := &from[i]
		if p.Duration <= 0 {
			return fmt.Errorf("pod %s of the durations' list has no duration: that list needs creation_time and deletion_time", p.Name)
		}
		byName[p.Name] = p
		byKind[p.Kind()] = append(byKind[p.Kind()], p.Duration)
	}
	rng := rand.New(rand.NewSource(seed))
	for i := range pods {
		p := &pods[i]
		if p.Duration > 0 {
			continue
		}
		if q, ok := byName[p.Name]; ok && q.NumGPU == p.NumGPU && q.GPUMilli == p.GPUMilli {
			p.Duration = q.Duration
			continue
		}
		ds := byKind[p.Kind()]
		if len(ds) == 0 {
			return fmt.Errorf("pod %s is %s, and the durations' list has no such pod to draw a duration from", p.Name, p.Kind())
		}
		p.Duration = ds[rng.Intn(len(ds))]
	}
	return nil
}

// ChurnRun is one policy at one offered load over the seeds.
type ChurnRun struct {
	Policy string       `json:"policy"`
	Load   float64      `json:"offered_load"`
	Seeds  []ChurnSeed  `json:"seeds"`
	Mean   ChurnFigures `json:"mean"`
	Std    ChurnFigures `json:"std"`
}

// ChurnSummary is churn.json.
type ChurnSummary struct {
	Protocol  string     `json:"protocol"`
	Nodes     string     `json:"nodes"`
	Pods      string     `json:"pods"`
	Durations string     `json:"durations,omitempty"`
	HorizonS  float64    `json:"horizon_s"`
	WarmupS   float64    `json:"warmup_s"`
	Runs      []ChurnRun `json:"runs"`
}

// summarize folds the run's seeds into its mean and standard deviation.
func (r *ChurnRun) summarize() {
	sort.Slice(r.Seeds, func(a, b int) bool { return r.Seeds[a].Seed < r.Seeds[b].Seed })
	fields := []func(*ChurnFigures) *float64{
		func(f *ChurnFigures) *float64 { return &f.AllocatedPct },
		func(f *ChurnFigures) *float64 { return &f.PresentPct },
		func(f *ChurnFigures) *float64 { return &f.WaitingPods },
	}
	kinds := []func(*KindWait) *float64{
		func(k *KindWait) *float64 { return &k.Arrived },
		func(k *KindWait) *float64 { return &k.NeverPlacedPct },
		func(k *KindWait) *float64 { return &k.WaitMeanS },
		func(k *KindWait) *float64 { return &k.WaitP50S },
		func(k *KindWait) *float64 { return &k.WaitP95S },
		func(k *KindWait) *float64 { return &k.WaitedPct },
	}
	r.Mean.Kinds, r.Std.Kinds = map[string]*KindWait{}, map[string]*KindWait{}
	for _, k := range []Kind{Shared, WholeCard, MultiCard, CPUOnly} {
		r.Mean.Kinds[k.String()], r.Std.Kinds[k.String()] = &KindWait{}, &KindWait{}
		for _, get := range kinds {
			fields = append(fields, func(f *ChurnFigures) *float64 { return get(f.Kinds[k.String()]) })
		}
	}
	for _, get := range fields {
		var vs []float64
		for i := range r.Seeds {
			vs = append(vs, *get(&r.Seeds[i].ChurnFigures))
		}
		*get(&r.Mean), *get(&r.Std) = meanStd(vs)
	}
}
