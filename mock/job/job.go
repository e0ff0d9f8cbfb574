package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/mock"
)

// Env is what the job reads from its container's environment.
type Env struct {
	// UUIDs are the cards it may see (NVIDIA_VISIBLE_DEVICES).
	UUIDs []string
	// LimitMiB is its share of each card (GPUPACK_MEMORY_LIMIT_MIB).
	LimitMiB int64
}

// ReadEnv reads the environment through getenv (os.Getenv in the command).
func ReadEnv(getenv func(string) string) (Env, error) {
	vis := getenv(contract.EnvVisibleDevices)
	if vis == "" || vis == "none" || vis == "void" || strings.HasPrefix(vis, "no-gpu-has-") {
		return Env{}, fmt.Errorf("%s is %q: the container was given no card", contract.EnvVisibleDevices, vis)
	}
	e := Env{UUIDs: strings.Split(vis, ",")}
	s := getenv("GPUPACK_MEMORY_LIMIT_MIB")
	limit, err := strconv.ParseInt(s, 10, 64)
	if err != nil || limit <= 0 {
		return Env{}, fmt.Errorf("GPUPACK_MEMORY_LIMIT_MIB is %q: want the share of each card in MiB", s)
	}
	e.LimitMiB = limit
	return e, nil
}

// Spec shapes the run.
type Spec struct {
	// Name names the job in the state file.
	Name string
	// Steps of training, each StepTime long.
	Steps    int
	StepTime time.Duration
	// Use is the fraction of the share held while training (0.9 when 0).
	Use float64
	// Exceed, when above 1, is the fraction of the share held from step
	// ExceedFrom (0: the middle of training) on: the job goes over its share.
	Exceed     float64
	ExceedFrom int
	// SM is the share of the SMs kept busy while training, 0..100 (60 when
	// 0).
	SM int
	// CheckpointEvery steps the job writes a checkpoint (SMs mostly idle);
	// 0: never.
	CheckpointEvery int
	// Seed drives the jitter of utilisation.
	Seed uint64
}

func (s Spec) withDefaults() Spec {
	if s.Use == 0 {
		s.Use = 0.9
	}
	if s.SM == 0 {
		s.SM = 60
	}
	if s.StepTime == 0 {
		s.StepTime = 100 * time.Millisecond
	}
	return s
}

// Phase is what the job does at one step.
type Phase struct {
	Name    string
	UsedMiB int64
	SM      int
}

// Plan is the phase of every step: loading (a third of the memory, few
// SMs), warm-up (memory and SMs ramp up over the first tenth of training,
// at most 20 steps),
// training (steady, with jitter; over the share from the middle when
// Exceed > 1), checkpoints; then the job ends. It is pure, so tests check
// it directly.
func Plan(s Spec, limitMiB int64) []Phase {
	s = s.withDefaults()
	rng := rand.New(rand.NewPCG(s.Seed, 1))
	steady := int64(float64(limitMiB) * s.Use)
	over := int64(float64(limitMiB) * s.Exceed)
	warm := max(1, min(s.Steps/10, 20))
	out := []Phase{{Name: "loading", UsedMiB: steady / 3, SM: 5}}
	for i := range s.Steps {
		p := Phase{Name: "training", UsedMiB: steady, SM: jitter(rng, s.SM)}
		switch {
		case i < warm:
			p.Name = "warm-up"
			p.UsedMiB = steady/3 + (steady-steady/3)*int64(i+1)/int64(warm)
			p.SM = s.SM * (i + 1) / warm
		case s.CheckpointEvery > 0 && (i+1)%s.CheckpointEvery == 0:
			p.Name, p.SM = "checkpoint", 5
		}
		from := s.ExceedFrom
		if from == 0 {
			from = s.Steps / 2
		}
		if s.Exceed > 1 && i >= from {
			p.UsedMiB = over
		}
		out = append(out, p)
	}
	return out
}

func jitter(rng *rand.Rand, sm int) int {
	v := sm + rng.IntN(21) - 10
	return max(0, min(100, v))
}

// Run plays the plan on the simulated cards of store, recorded as process
// self (mock.SelfIdentity in the command: in a container, its PID there and
// its PID namespace, which the simulated NVML resolves to the host's PID),
// and removes the process when done or when ctx ends. It reports each phase
// change to out.
func Run(ctx context.Context, store *mock.Store, env Env, spec Spec, self mock.Identity, out io.Writer) error {
	spec = spec.withDefaults()
	state, err := store.Read()
	if err != nil {
		return err
	}
	byUUID := map[string]int{}
	for i, c := range state.Cards {
		byUUID[c.UUID] = i
	}
	cards := make([]int, len(env.UUIDs))
	for i, u := range env.UUIDs {
		c, ok := byUUID[u]
		if !ok {
			return fmt.Errorf("card %s is not on simulated node %s", u, state.Node)
		}
		cards[i] = c
	}
	defer func() {
		if err := store.RemoveProcess(self); err != nil {
			fmt.Fprintf(out, "removing process %d: %v\n", self.PID, err)
		}
	}()
	last := ""
	t := time.NewTicker(spec.StepTime)
	defer t.Stop()
	for i, p := range Plan(spec, env.LimitMiB) {
		if p.Name != last {
			fmt.Fprintf(out, "step %d: %s, %d MiB of %d MiB on each of %d card(s), SM %d%%\n", i, p.Name, p.UsedMiB, env.LimitMiB, len(cards), p.SM)
			last = p.Name
		}
		for _, c := range cards {
			rec := mock.Process{PID: self.PID, PIDNamespace: self.PIDNamespace, StartTime: self.StartTime, UsedMiB: p.UsedMiB, SM: p.SM, Job: spec.Name}
			if err := store.SetProcess(c, rec); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	fmt.Fprintln(out, "done")
	return nil
}

// StateFromEnv opens the simulated node's state named by
// GPUPACK_MOCK_STATE, which the device plugin's Allocate sets on simulated
// cards (with the state's folder mounted), as the test kubelet does.
func StateFromEnv(getenv func(string) string) (*mock.Store, error) {
	path := getenv(EnvMockState)
	if path == "" {
		return nil, errors.New(EnvMockState + " is not set: it names the simulated node's state file")
	}
	return mock.Open(path)
}

// EnvMockState names the state file of the simulated node a job runs on.
const EnvMockState = "GPUPACK_MOCK_STATE"
