package mock

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestNewState(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     Config
		want    []string
		wantErr string
	}{
		{"a100x8", Config{Node: "n", Preset: "a100x8"}, repeat("NVIDIA A100-SXM4-80GB", 8), ""},
		{"t4x4", Config{Node: "n", Preset: "t4x4"}, repeat("Tesla T4", 4), ""},
		{"mixed", Config{Node: "n", Preset: "mixed"}, []string{"NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", "Tesla T4", "Tesla T4"}, ""},
		{"cards by short and NVML name", Config{Node: "n", Cards: []string{"A10", "Tesla V100-SXM2-32GB"}}, []string{"NVIDIA A10", "Tesla V100-SXM2-32GB"}, ""},
		{"unknown preset", Config{Preset: "dgx9"}, nil, `unknown preset "dgx9"`},
		{"unknown model", Config{Cards: []string{"T4", "B300"}}, nil, `card 1: unknown card model "B300"`},
		{"no cards", Config{}, nil, "needs a preset or at least one card"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewState(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range s.Cards {
				if c.Model != tt.want[i] {
					t.Errorf("card %d: %s, want %s", i, c.Model, tt.want[i])
				}
			}
			if s.Cards[0].UUID == "" || (len(s.Cards) > 1 && s.Cards[0].UUID == s.Cards[1].UUID) {
				t.Error("UUIDs are not unique")
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(p, []byte("node: gpu-7\ncards: [T4, A100-80GB]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil || c.Node != "gpu-7" || len(c.Cards) != 2 {
		t.Fatalf("%+v %v", c, err)
	}
	if err := os.WriteFile(p, []byte("nodes: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), `unknown field "nodes"`) {
		t.Errorf("err = %v", err)
	}
}

// TestStoreSharedUpdates has many writers add processes at once: the file
// lock keeps every one.
func TestStoreSharedUpdates(t *testing.T) {
	s, _ := NewState(Config{Node: "n", Preset: "t4x4"})
	st, err := Create(filepath.Join(t.TempDir(), "state.json"), s)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other, _ := Open(st.Path()) // as another process would
			if err := other.SetProcess(i%4, Process{PID: 1000 + i, UsedMiB: 1}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, err := st.Read()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range got.Cards {
		n += len(c.Processes)
	}
	if n != 40 {
		t.Errorf("%d processes kept, want 40", n)
	}
	if err := st.RemoveProcess(1000); err != nil {
		t.Fatal(err)
	}
	if err := st.InjectXid(7, 79); err == nil {
		t.Error("fault on a card that does not exist")
	}
}
