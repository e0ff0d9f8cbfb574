package mock

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
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
	if err := st.RemoveProcess(Identity{PID: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := st.InjectXid(7, 79); err == nil {
		t.Error("fault on a card that does not exist")
	}
}

// TestProcessesByNamespaceAndPID: a record is its PID in its PID
// namespace, so two containers' PID 1 are two processes; the same PID in
// the same namespace is replaced; a record without a namespace is the
// host's.
func TestProcessesByNamespaceAndPID(t *testing.T) {
	const nsA, nsB = 4026599001, 4026599002
	type rec struct {
		ns      uint64
		pid     int
		usedMiB int64
	}
	tests := []struct {
		name   string
		set    []Process
		remove []Identity
		want   []rec
	}{
		{
			name: "PID 1 of two containers",
			set:  []Process{{PIDNamespace: nsA, PID: 1, StartTime: 10, UsedMiB: 1}, {PIDNamespace: nsB, PID: 1, StartTime: 10, UsedMiB: 2}},
			want: []rec{{nsA, 1, 1}, {nsB, 1, 2}},
		},
		{
			name: "the same process again replaces its record",
			set:  []Process{{PIDNamespace: nsA, PID: 1, StartTime: 10, UsedMiB: 1}, {PIDNamespace: nsA, PID: 1, StartTime: 10, UsedMiB: 5}},
			want: []rec{{nsA, 1, 5}},
		},
		{
			name: "a host PID and a container's PID alike",
			set:  []Process{{PID: 1, UsedMiB: 1}, {PIDNamespace: nsA, PID: 1, StartTime: 10, UsedMiB: 2}},
			want: []rec{{0, 1, 1}, {nsA, 1, 2}},
		},
		{
			name:   "removing one container's PID 1 keeps the other",
			set:    []Process{{PIDNamespace: nsA, PID: 1, StartTime: 10, UsedMiB: 1}, {PIDNamespace: nsB, PID: 1, StartTime: 10, UsedMiB: 2}},
			remove: []Identity{{PIDNamespace: nsB, PID: 1, StartTime: 10}},
			want:   []rec{{nsA, 1, 1}},
		},
		{
			name:   "removing a host PID keeps a container's",
			set:    []Process{{PID: 1, UsedMiB: 1}, {PIDNamespace: nsA, PID: 1, StartTime: 10, UsedMiB: 2}},
			remove: []Identity{{PID: 1}},
			want:   []rec{{nsA, 1, 2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := NewState(Config{Node: "n", Preset: "t4x4"})
			st, err := Create(filepath.Join(t.TempDir(), "state.json"), s)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.set {
				if err := st.SetProcess(2, p); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range tt.remove {
				if err := st.RemoveProcess(id); err != nil {
					t.Fatal(err)
				}
			}
			got, err := st.Read()
			if err != nil {
				t.Fatal(err)
			}
			var recs []rec
			for _, p := range got.Cards[2].Processes {
				recs = append(recs, rec{p.PIDNamespace, p.PID, p.UsedMiB})
			}
			if diff := cmp.Diff(tt.want, recs, cmp.AllowUnexported(rec{})); diff != "" {
				t.Errorf("processes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProcessJSON: the record stays readable, and records written before
// namespaces were read as host PIDs.
func TestProcessJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nvml.json")
	old := `{"node":"n","cards":[{"model":"Tesla T4","uuid":"GPU-1","memoryMiB":15360,"idleW":10,"maxW":70,` +
		`"processes":[{"pid":4242,"usedMiB":1024,"sm":30,"job":"old"}]}],"seq":0}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Cards[0].Processes[0], (Process{PID: 4242, UsedMiB: 1024, SM: 30, Job: "old"}); got != want {
		t.Errorf("old record read as %+v, want %+v", got, want)
	}
	if err := st.SetProcess(0, Process{PIDNamespace: 4026532201, PID: 1, StartTime: 123456, UsedMiB: 2048, Job: "new"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"pid": 1,`, `"pidNamespace": 4026532201,`, `"startTime": 123456,`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("state file lacks %s:\n%s", want, b)
		}
	}
}

// TestOpenOrCreate: a plugin that restarts keeps the state of the same node
// and cards (its jobs' processes, lost cards, faults), and replaces any
// other.
func TestOpenOrCreate(t *testing.T) {
	t4 := func(node string) *State {
		s, err := NewState(Config{Node: node, Preset: "t4x4"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		// before is the file there, "" for none.
		before   string
		want     *State
		wantKept bool
	}{
		{"no file", "", t4("n"), false},
		{"the same node and cards", "same", t4("n"), true},
		{"another node", "same", t4("m"), false},
		{"other cards", "same", func() *State { s, _ := NewState(Config{Node: "n", Preset: "mixed"}); return s }(), false},
		{"one card fewer", "same", func() *State { s := t4("n"); s.Cards = s.Cards[:3]; return s }(), false},
		{"a torn file", "{\"node\": \"n\", \"cards\": [", t4("n"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mock", "nvml.json")
			switch tt.before {
			case "":
			case "same":
				st, err := Create(path, t4("n"))
				if err != nil {
					t.Fatal(err)
				}
				if err := st.SetProcess(1, Process{PIDNamespace: 4026532201, PID: 1, StartTime: 5, UsedMiB: 512}); err != nil {
					t.Fatal(err)
				}
				if err := st.Lose(3, true); err != nil {
					t.Fatal(err)
				}
				if err := st.InjectXid(0, 79); err != nil {
					t.Fatal(err)
				}
			default:
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(tt.before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			st, kept, err := OpenOrCreate(path, tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if kept != tt.wantKept {
				t.Errorf("kept = %v, want %v", kept, tt.wantKept)
			}
			got, err := st.Read()
			if err != nil {
				t.Fatal(err)
			}
			if !got.sameNode(tt.want) {
				t.Fatalf("state of node %q with %d cards, want node %q with %d", got.Node, len(got.Cards), tt.want.Node, len(tt.want.Cards))
			}
			carried := len(got.Cards[1].Processes) == 1 && got.Cards[3].Lost && len(got.Events) == 1 && got.Seq == 1
			if carried != tt.wantKept {
				t.Errorf("processes, lost card and fault kept: %v, want %v (%+v)", carried, tt.wantKept, got)
			}
		})
	}
}
