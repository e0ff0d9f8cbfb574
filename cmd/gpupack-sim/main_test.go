package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpupack/gpupack/sim"
)

func run(args ...string) (string, error) {
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestHelp(t *testing.T) {
	out, err := run("--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sorted by name", "math/rand", "130%", "UNALLOCATED GPU %", "--seeds", "--policy", "placements-<seed>.csv", "summary.json", "--workload", "--ties", "fgd", "fill"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	nodes := write(t, dir, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model\nn1,64000,262144,2,T4\nn2,64000,262144,8,G2\n")
	pods := write(t, dir, "pods.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np0,1000,10,1,500,\np1,1000,10,1,1000,G2\np2,1000,10,0,0,\np3,1000,10,2,1000,\n")
	bad := write(t, dir, "bad.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np0,1000,10,1,500,\np1,1000,10,1,1000,V100\n")

	t.Run("outputs", func(t *testing.T) {
		out := filepath.Join(dir, "out")
		if _, err := run("--nodes", nodes, "--pods", pods, "--policy", "default,fgd", "--seeds", "42,43", "--out", out); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"allocation.svg", "default/summary.json", "default/placements-42.csv", "default/placements-43.csv", "fgd/summary.json"} {
			if _, err := os.Stat(filepath.Join(out, f)); err != nil {
				t.Error(err)
			}
		}
		var s sim.Summary
		b, _ := os.ReadFile(filepath.Join(out, "fgd", "summary.json"))
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		if len(s.Seeds) != 2 || s.Seeds[0].Seed != 42 || s.Capacity != 10000 {
			t.Errorf("summary: %d seeds, first %d, capacity %d; want 2, 42, 10000", len(s.Seeds), s.Seeds[0].Seed, s.Capacity)
		}
	})
	t.Run("limits with the integer program", func(t *testing.T) {
		if _, err := exec.LookPath(sim.Solver); err != nil {
			t.Skipf("%s: %v", sim.Solver, err)
		}
		out := filepath.Join(dir, "limits")
		if _, err := run("--nodes", nodes, "--pods", pods, "--seeds", "42", "--limits", "--limits-program", "2s", "--out", out); err != nil {
			t.Fatal(err)
		}
		var s sim.LimitsSummary
		b, _ := os.ReadFile(filepath.Join(out, "limits.json"))
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		// The pods arrived at 100% (drawn again and again until they ask
		// the 10 cards) all fit: each figure is 0.
		if l := s.Seeds[0]; l.ProgramUnallocated == nil || !near(*l.ProgramUnallocated, 0) || !near(l.OfflineUnallocated, 0) || !near(l.BoundUnallocated, 0) {
			t.Errorf("limits %+v: want 0%% unallocated by the integer program, the best packing and the bound", l)
		}
	})
	t.Run("bad file", func(t *testing.T) {
		_, err := run("--nodes", nodes, "--pods", bad, "--seeds", "42", "--out", filepath.Join(dir, "o2"))
		if err == nil || !strings.Contains(err.Error(), "bad.csv:3:6: column gpu_spec: unknown model \"V100\"") {
			t.Errorf("err = %v, want the file, line and column of the unknown model", err)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{
			{"--policy", "tetris"},
			{"--seeds", "9-1"},
			{"--workload", "future"},
			{"--ties", "last"},
			{"--limits-program", "5m"},
			{"--limits", "--limits-program", "-1s"},
		} {
			if _, err := run(append([]string{"--nodes", nodes, "--pods", pods, "--out", dir}, args...)...); err == nil {
				t.Errorf("%v: no error", args)
			}
		}
	})
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
