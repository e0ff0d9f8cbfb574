package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/sim"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var opts sim.Options
	var pols, seeds, workload, ties, loads string
	var churn bool
	cmd := &cobra.Command{
		Use:   "gpupack-sim --nodes FILE --pods FILE [--policy NAME[,NAME...]] [--seeds 42-51] --out DIR",
		Short: "replay the openb GPU-sharing trace through gpupack's placement policies",
		Long: `gpupack-sim replays a node list and a pod list of Alibaba's openb trace
(cluster-trace-gpu-v2023, Weng et al., "Beware of Fragmentation", USENIX ATC
2023) under the paper's published protocol, through the same filter, card
choice and scoring code (extender/policy) that gpupack-extender runs.

Protocol, for each seed:
  1. Nodes: every row of --nodes (sn,cpu_milli,memory_mib,gpu,model); each
     card is 1000 thousandths.
  2. Order: the pods of --pods sorted by name, shuffled with Go's math/rand
     seeded by the seed.
  3. Inflation: copies drawn uniformly with replacement from the pods (the
     same generator) are appended until the next copy would push the GPU
     asked for (sum of num_gpu x gpu_milli) past 130% of capacity.
  4. One pod at a time, no departures, no preemption: every node is rated by
     the policy (CPU, memory, gpu_spec and card room are checked), the best
     score wins; a pod that fits nowhere fails. Ties go to the first of the
     best nodes in a random order of the nodes drawn once per seed (--ties
     perm, the default: the published simulator prefixes each node's name
     with its place in a random permutation and gives ties to the smallest
     name), in the node list's order (--ties first), or to one drawn afresh
     for each pod (--ties random, kube-scheduler's rule between its best
     nodes); every generator is seeded by the seed, so a run repeats
     exactly.

Metric: "arrived" is the GPU asked for by the pods submitted so far, as % of
capacity; "allocation" is the GPU placed, as % of capacity. The figure of
merit is UNALLOCATED GPU % = 100 - allocation, read after the last pod whose
arrival keeps arrived at or below 100% (and 130%); mean and sample standard
deviation over the seeds. 0% at 100% arrived is ideal.

Outputs in --out (in --out/<policy>/ when several policies run):
  summary.json           per seed and mean/std: unallocated % at 100% and
                         130%, arrived % at the first failed pod, failed pods
                         by kind (shared, whole_card, multi_card, cpu_only),
                         decisions per second, decision time p50/p99
  placements-<seed>.csv  seq,pod,num_gpu,gpu_milli,cpu_milli,memory_mib,node,gpus
                         (seq: arrival order over the inflated sequence; node:
                         sn, empty if the pod failed; gpus: card indices, |-separated)
and --out/allocation.svg: allocation against arrived workload, one curve per
policy (mean over seeds).

Policies reading a workload (fgd, and the default) measure fragmentation
against --workload: "seen" (the pods arrived so far, the current one
included: what a running extender knows) or "trace" (every pod of the file,
as the published FGD runs did).`,
		Example: `  gpupack-sim --nodes openb_node_list_gpu_node.csv --pods openb_pod_list_default.csv \
      --policy fgd --workload trace --seeds 42-51 --out out/fgd
  gpupack-sim --nodes ... --pods ... --policy default,fgd,bestfit --seeds 42,43 --out out/cmp`,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if opts.Seeds, err = sim.ParseSeeds(seeds); err != nil {
				return err
			}
			for _, p := range strings.Split(pols, ",") {
				if p = strings.TrimSpace(p); p != "" {
					if _, err := policy.Get(policy.Name(p)); err != nil {
						return err
					}
					opts.Policies = append(opts.Policies, p)
				}
			}
			switch sim.WorkloadSource(workload) {
			case sim.Seen, sim.Trace:
				opts.Workload = sim.WorkloadSource(workload)
			default:
				return fmt.Errorf("--workload %q: want %s or %s", workload, sim.Seen, sim.Trace)
			}
			switch sim.TieBreak(ties) {
			case sim.TieFirst, sim.TieRandom, sim.TiePermutation:
				opts.Ties = sim.TieBreak(ties)
			default:
				return fmt.Errorf("--ties %q: want %s, %s or %s", ties, sim.TieFirst, sim.TieRandom, sim.TiePermutation)
			}
			if opts.WorkloadCoverage < 0 || opts.WorkloadCoverage > 1 {
				return fmt.Errorf("--coverage %v: want a fraction in (0, 1], or 0 for the policy's own", opts.WorkloadCoverage)
			}
			opts.Log = cmd.ErrOrStderr()
			if opts.ProgramTime < 0 || opts.ProgramTime > 0 && !opts.Limits {
				return fmt.Errorf("--limits-program %s: want a positive time, with --limits", opts.ProgramTime)
			}
			if churn {
				if opts.Limits {
					return fmt.Errorf("--limits reads the pods arrived under the published protocol: not with --churn")
				}
				if opts.Loads, err = parseLoads(loads); err != nil {
					return err
				}
				if opts.Horizon <= 0 || opts.Warmup < 0 || opts.Warmup >= opts.Horizon {
					return fmt.Errorf("--horizon %s, --warmup %s: want a positive horizon and a warm-up from 0 to less than it", opts.Horizon, opts.Warmup)
				}
				sum, err := sim.RunChurn(opts)
				if err != nil {
					return err
				}
				printChurn(cmd.OutOrStdout(), sum)
				return nil
			}
			if cmd.Flags().Changed("durations") || cmd.Flags().Changed("load") {
				return fmt.Errorf("--durations and --load are for --churn")
			}
			summaries, limits, err := sim.Run(opts)
			if err != nil {
				return err
			}
			for _, s := range summaries {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: unallocated %.2f ± %.2f%% at 100%% arrived, %.2f ± %.2f%% at 130%%; decision p99 %.3f ms (%d seeds)\n",
					s.Policy, s.Mean.UnallocatedAt100, s.Std.UnallocatedAt100, s.Mean.UnallocatedAt130, s.Std.UnallocatedAt130, s.Mean.DecisionP99Ms, len(s.Seeds))
			}
			if limits != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "limits: no placement leaves less than %.2f ± %.2f%% unallocated at 100%% arrived; best offline packing found %.2f ± %.2f%%\n",
					limits.BoundMean, limits.BoundStd, limits.OfflineMean, limits.OfflineStd)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.NodesFile, "nodes", "", "node list CSV (sn,cpu_milli,memory_mib,gpu,model)")
	f.StringVar(&opts.PodsFile, "pods", "", "pod list CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec])")
	f.StringVar(&pols, "policy", "default", fmt.Sprintf("policies, comma-separated: %s, or default (%s, what the extender uses)", strings.Join(policy.Names(), ", "), policy.Default))
	f.StringVar(&seeds, "seeds", "42-51", "seeds: a range (42-51) or a list (42,45)")
	f.StringVar(&opts.Out, "out", "", "output folder (created)")
	f.StringVar(&workload, "workload", string(sim.Seen), "what fragmentation is measured against: seen (pods arrived so far) or trace (the whole file)")
	f.StringVar(&ties, "ties", string(sim.DefaultTies), "which of the best-scored nodes gets a pod: perm (first in a random order of the nodes drawn per seed, as the published simulator; reproduces its figures), first (in the node list's order) or random (drawn per pod, kube-scheduler's rule)")
	f.Float64Var(&opts.WorkloadCoverage, "coverage", 0, fmt.Sprintf("share of pods whose shapes the workload estimate keeps (0: the policy's own, %.2f for fill; else %.2f as in the paper)", fillCoverage(), policy.DefaultCoverage))
	f.BoolVar(&opts.Cold, "cold", false, "rate every node for every pod (no reuse of unchanged nodes' results): the decision time of a cold cache")
	f.BoolVar(&opts.Limits, "limits", false, "also compute, per seed, a bound no placement of the pods arrived at 100% can beat and the best offline packing found, into --out/limits.json (needs GLPK's glpsol: apt-get install glpk-utils)")
	f.DurationVar(&opts.ProgramTime, "limits-program", 0, "with --limits: also pack offline by an integer program over node configurations, GLPK's branch and bound running up to this long per seed (e.g. 5m; 0: not)")
	f.IntVar(&opts.Parallel, "parallel", 0, "seeds replayed at once (0: one per CPU)")
	f.BoolVar(&churn, "churn", false, "run the churn protocol instead (pods arrive and leave; see sim/README.md, Churn): time-averaged allocation and waits by kind at each --load, into --out/churn.json")
	f.StringVar(&loads, "load", "80,100,120", "with --churn: offered GPU loads, % of capacity, comma-separated")
	f.DurationVar(&opts.Horizon, "horizon", 48*time.Hour, "with --churn: simulated time of each run")
	f.DurationVar(&opts.Warmup, "warmup", 12*time.Hour, "with --churn: simulated time before the figures are read")
	f.StringVar(&opts.DurationsFile, "durations", "", "with --churn: a pod list with creation_time and deletion_time giving durations to pods of --pods without them (the multigpu files: use the default workload)")
	for _, name := range []string{"nodes", "pods", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func fillCoverage() float64 {
	p, _ := policy.Get(policy.Fill)
	return p.Coverage
}

// parseLoads reads "80,100,120" (% of capacity) into fractions.
func parseLoads(s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil || !(v > 0) || v > 1000 {
			return nil, fmt.Errorf("--load %q: %q is not a load: want percentages of GPU capacity above 0, e.g. 80,100,120", s, part)
		}
		out = append(out, v/100)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--load %q: no load", s)
	}
	return out, nil
}

// printChurn prints one line per policy and load: the means over seeds.
func printChurn(w io.Writer, sum *sim.ChurnSummary) {
	fmt.Fprintf(w, "%-10s %7s %12s %12s %9s | %-26s | %-26s | %-26s\n", "policy", "offered", "allocated", "present", "waiting",
		"shared: never%, mean wait", "whole card: never%, wait", "multi-card: never%, wait")
	for _, r := range sum.Runs {
		k := r.Mean.Kinds
		kind := func(name string) string {
			wait := "-" // no pod of the kind was placed: no wait to show
			if k[name].Arrived > 0 && k[name].NeverPlacedPct < 100 {
				wait = (time.Duration(k[name].WaitMeanS * float64(time.Second))).Round(time.Second).String()
			}
			return fmt.Sprintf("%6.2f%% %10s", k[name].NeverPlacedPct, wait)
		}
		fmt.Fprintf(w, "%-10s %6.0f%% %6.2f±%.2f%% %11.2f%% %9.0f | %-26s | %-26s | %-26s\n", r.Policy, r.Load*100,
			r.Mean.AllocatedPct, r.Std.AllocatedPct, r.Mean.PresentPct, r.Mean.WaitingPods,
			kind("shared"), kind("whole_card"), kind("multi_card"))
	}
}
