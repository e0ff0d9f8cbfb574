package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpupack/gpupack/internal/version"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/mock/job"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var spec job.Spec
	var state string
	cmd := &cobra.Command{
		Use:   "gpupack-train",
		Short: "simulated AI-training job on the mock NVML",
		Long: `gpupack-train runs a simulated training job on the cards the device plugin
gave its container: it reads NVIDIA_VISIBLE_DEVICES and GPUPACK_MEMORY_LIMIT_MIB,
registers itself as a process on those cards in the simulated node's state
(--state, default $GPUPACK_MOCK_STATE, which Allocate sets on simulated cards)
by its PID namespace, PID and start time (in a container, the simulated NVML
reports it under its host PID), takes memory and keeps SMs busy in the
phases of a training loop (loading, warm-up, training, checkpoints), and
leaves when done. --exceed 1.5 makes it take 150% of its share from the middle
of training on, as a job that ignores its limit does.`,
		SilenceUsage: true,
		Version:      version.Get(),
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := job.ReadEnv(os.Getenv)
			if err != nil {
				return err
			}
			var store *mock.Store
			if state != "" {
				store, err = mock.Open(state)
			} else {
				store, err = job.StateFromEnv(os.Getenv)
			}
			if err != nil {
				return err
			}
			self, err := mock.SelfIdentity()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return job.Run(ctx, store, env, spec, self, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "state file of the simulated node (default $"+job.EnvMockState+")")
	f.StringVar(&spec.Name, "name", "train", "job name, shown in the state file")
	f.IntVar(&spec.Steps, "steps", 100, "training steps")
	f.DurationVar(&spec.StepTime, "step-time", 100*time.Millisecond, "time of one step")
	f.Float64Var(&spec.Use, "use", 0.9, "fraction of the share held while training")
	f.Float64Var(&spec.Exceed, "exceed", 0, "fraction of the share held from --exceed-from on, when above 1")
	f.IntVar(&spec.ExceedFrom, "exceed-from", 0, "step from which --exceed applies (0: the middle of training)")
	f.IntVar(&spec.SM, "sm", 60, "percent of the SMs kept busy while training")
	f.IntVar(&spec.CheckpointEvery, "checkpoint-every", 25, "steps between checkpoints (0: none)")
	f.Uint64Var(&spec.Seed, "seed", 1, "seed of the utilisation jitter")
	return cmd
}
