package job

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpupack/gpupack/mock"
)

func TestReadEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Env
		wantErr string
	}{
		{"two cards", map[string]string{"NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b", "GPUPACK_MEMORY_LIMIT_MIB": "5120"}, Env{UUIDs: []string{"GPU-a", "GPU-b"}, LimitMiB: 5120}, ""},
		{"no card", map[string]string{"GPUPACK_MEMORY_LIMIT_MIB": "5120"}, Env{}, "given no card"},
		{"gpushare's failed match", map[string]string{"NVIDIA_VISIBLE_DEVICES": "no-gpu-has-4GiB-to-run", "GPUPACK_MEMORY_LIMIT_MIB": "1"}, Env{}, "given no card"},
		{"no limit", map[string]string{"NVIDIA_VISIBLE_DEVICES": "GPU-a"}, Env{}, "GPUPACK_MEMORY_LIMIT_MIB"},
		{"bad limit", map[string]string{"NVIDIA_VISIBLE_DEVICES": "GPU-a", "GPUPACK_MEMORY_LIMIT_MIB": "-3"}, Env{}, "GPUPACK_MEMORY_LIMIT_MIB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || strings.Join(got.UUIDs, ",") != strings.Join(tt.want.UUIDs, ",") || got.LimitMiB != tt.want.LimitMiB {
				t.Errorf("ReadEnv = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name     string
		spec     Spec
		maxUsed  int64 // the most memory held at any step
		overFrom int   // first step over the share (-1: never)
	}{
		{"within its share", Spec{Steps: 40, CheckpointEvery: 10}, 9216, -1},
		{"over from the middle", Spec{Steps: 40, Exceed: 1.5}, 15360, 21},
		{"over from step 5", Spec{Steps: 40, Exceed: 1.5, ExceedFrom: 5}, 15360, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := Plan(tt.spec, 10240)
			if len(plan) != tt.spec.Steps+1 || plan[0].Name != "loading" {
				t.Fatalf("plan of %d steps starting %q", len(plan), plan[0].Name)
			}
			var most int64
			over := -1
			phases := map[string]bool{}
			for i, p := range plan {
				most = max(most, p.UsedMiB)
				if p.UsedMiB > 10240 && over < 0 {
					over = i
				}
				if p.SM < 0 || p.SM > 100 {
					t.Errorf("step %d: SM %d", i, p.SM)
				}
				phases[p.Name] = true
			}
			if most != tt.maxUsed || over != tt.overFrom {
				t.Errorf("most %d MiB, over from step %d; want %d, %d", most, over, tt.maxUsed, tt.overFrom)
			}
			if !phases["warm-up"] || !phases["training"] {
				t.Errorf("phases %v", phases)
			}
			if tt.spec.CheckpointEvery > 0 && !phases["checkpoint"] {
				t.Error("no checkpoint")
			}
		})
	}
}

func TestRunOnTheSimulatedCards(t *testing.T) {
	s, err := mock.NewState(mock.Config{Node: "n", Preset: "mixed"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mock.Create(filepath.Join(t.TempDir(), "state.json"), s)
	if err != nil {
		t.Fatal(err)
	}
	env := Env{UUIDs: []string{s.Cards[1].UUID, s.Cards[3].UUID}, LimitMiB: 2048}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// While it runs, its process shows on both cards and no other.
	seen := make(chan *mock.State, 1)
	go func() {
		for ctx.Err() == nil {
			cur, err := st.Read()
			if err == nil && len(cur.Cards[1].Processes) == 1 && cur.Cards[1].Processes[0].UsedMiB > 1500 {
				seen <- cur
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	self, err := mock.SelfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if err := Run(ctx, st, env, Spec{Name: "j", Steps: 50, StepTime: 5 * time.Millisecond}, self, &out); err != nil {
		t.Fatal(err)
	}
	select {
	case cur := <-seen:
		if len(cur.Cards[3].Processes) != 1 || len(cur.Cards[0].Processes) != 0 || cur.Cards[1].Processes[0].Job != "j" {
			t.Errorf("processes while training: %+v", cur.Cards)
		}
		if got := cur.Cards[1].Processes[0].Identity(); got != self {
			t.Errorf("the job recorded itself as %v, want %v", got, self)
		}
	default:
		t.Error("the job never showed on card 1")
	}
	after, _ := st.Read()
	for i, c := range after.Cards {
		if len(c.Processes) != 0 {
			t.Errorf("card %d keeps %v after the job", i, c.Processes)
		}
	}
	for _, want := range []string{"loading", "warm-up", "training", "done"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// A card not on the node.
	if err := Run(ctx, st, Env{UUIDs: []string{"GPU-other"}, LimitMiB: 1}, Spec{Steps: 1}, self, &out); err == nil {
		t.Error("ran on a card the node does not have")
	}
}
