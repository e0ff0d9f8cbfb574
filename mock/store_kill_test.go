package mock

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// envKillWriter makes the test binary a writer that updates the state
// file at envKillWriter's path in a loop until it is killed.
const envKillWriter = "GPUPACK_MOCK_TEST_KILL_WRITER"

func TestMain(m *testing.M) {
	if path := os.Getenv(envKillWriter); path != "" {
		st, err := Open(path)
		if err != nil {
			os.Exit(2)
		}
		for pid := 1; ; pid++ {
			if err := st.SetProcess(0, Process{PID: pid, UsedMiB: 1}); err != nil {
				os.Exit(3)
			}
		}
	}
	os.Exit(m.Run())
}

// TestStoreSurvivesAKilledWriter kills a process in the middle of its
// updates, again and again, as the kubelet kills jobs: the state must stay
// whole every time.
func TestStoreSurvivesAKilledWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	path := filepath.Join(t.TempDir(), "nvml.json")
	st, err := Prepare("t4x4", path, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envKillWriter+"="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(5+i%7) * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		s, err := st.Read()
		if err != nil {
			t.Fatalf("kill %d: %v", i, err)
		}
		if s.Node != "node-a" || len(s.Cards) != 4 {
			t.Fatalf("kill %d: the state is torn: node %q, %d cards", i, s.Node, len(s.Cards))
		}
	}
}
