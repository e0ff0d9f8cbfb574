package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/deviceplugin/config"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/mock/job"
)

// mockConfig is a defaulted configuration of simulated cards.
func mockConfig(spec, state string) *config.Config {
	c := &config.Config{Version: config.Version, NVML: spec, MockState: state}
	config.SetDefaults(c)
	return c
}

func TestOpenNVML(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte("cards: [A100-80GB, T4, T4]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec      string
		wantCards int
		wantErr   string
	}{
		{"mock:a100x8", 8, ""},
		{"mock:mixed", 4, ""},
		{"mock:" + cfg, 3, ""},
		{"mock:nope", 0, `neither a preset`},
		{"mock:", 0, `want "real", "mock:<preset>"`},
		{"fake", 0, `want "real", "mock:<preset>"`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			cards, err := openNVML(context.Background(), "n1", mockConfig(tt.spec, filepath.Join(dir, "state.json")))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			devs, err := cards.lib.Devices()
			if err != nil || len(devs) != tt.wantCards {
				t.Errorf("%d devices, %v", len(devs), err)
			}
		})
	}
}

// TestSimulatedCardsTravelWithTheAllocation: every container given
// simulated cards gets the state's folder, mounted at the same path, and
// GPUPACK_MOCK_STATE.
func TestSimulatedCardsTravelWithTheAllocation(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		mockState string
		wantState string
	}{
		{"an absolute path", filepath.Join(dir, "mock", "nvml.json"), filepath.Join(dir, "mock", "nvml.json")},
		{"a relative path is made absolute", "rel/nvml.json", filepath.Join(dir, "rel", "nvml.json")},
	}
	t.Chdir(dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cards, err := openNVML(context.Background(), "n1", mockConfig("mock:t4x4", tt.mockState))
			if err != nil {
				t.Fatal(err)
			}
			want := []*pluginapi.Mount{{ContainerPath: filepath.Dir(tt.wantState), HostPath: filepath.Dir(tt.wantState)}}
			if diff := cmp.Diff(want, cards.mounts, protocmp.Transform()); diff != "" {
				t.Errorf("mounts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]string{job.EnvMockState: tt.wantState}, cards.env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
			if _, err := os.Stat(tt.wantState); err != nil {
				t.Errorf("no state where the containers are told: %v", err)
			}
		})
	}
	t.Run("the state's folder must not be /", func(t *testing.T) {
		_, err := openNVML(context.Background(), "n1", mockConfig("mock:t4x4", "/nvml.json"))
		if err == nil || !strings.Contains(err.Error(), "a folder of its own") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("real cards come with nothing more", func(t *testing.T) {
		// The real library is not on this machine; what travels is.
		cards, _ := openNVML(context.Background(), "n1", &config.Config{NVML: "real", NVMLLibrary: filepath.Join(dir, "none.so")})
		if cards.mounts != nil || cards.env != nil {
			t.Errorf("real cards: mounts %v, env %v", cards.mounts, cards.env)
		}
	})
}

// TestRestartKeepsTheSimulatedNode: a plugin that restarts on the same
// node and cards keeps the state (its jobs' processes, faults); other cards
// replace it.
func TestRestartKeepsTheSimulatedNode(t *testing.T) {
	tests := []struct {
		name     string
		again    string // --nvml of the restarted plugin
		node     string
		wantKept bool
	}{
		{"same node, same cards", "mock:t4x4", "n1", true},
		{"other cards", "mock:mixed", "n1", false},
		{"another node", "mock:t4x4", "n2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mock", "nvml.json")
			if _, err := openNVML(context.Background(), "n1", mockConfig("mock:t4x4", path)); err != nil {
				t.Fatal(err)
			}
			st, err := mock.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SetProcess(1, mock.Process{PIDNamespace: 4026532201, PID: 1, StartTime: 7, UsedMiB: 512, Job: "train"}); err != nil {
				t.Fatal(err)
			}
			if err := st.InjectXid(2, 79); err != nil {
				t.Fatal(err)
			}
			if _, err := openNVML(context.Background(), tt.node, mockConfig(tt.again, path)); err != nil {
				t.Fatal(err)
			}
			s, err := st.Read()
			if err != nil {
				t.Fatal(err)
			}
			kept := len(s.Cards[1].Processes) == 1 && s.Seq == 1
			if kept != tt.wantKept {
				t.Errorf("the job's process and the fault kept: %v, want %v", kept, tt.wantKept)
			}
		})
	}
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--node-name="}, "--node-name"},
		{[]string{"--node-name=n", "--memory-unit=KiB"}, "KiB"},
		{[]string{"--node-name=n", "--nvml=mock:nope", "--mock-state=" + filepath.Join(t.TempDir(), "s.json")}, "neither a preset"},
		{[]string{"extra"}, "unknown command"},
		// a ticker of 0 used to panic the plugin
		{[]string{"--node-name=n", "--usage-interval=0"}, `--usage-interval: Invalid value: "0s": must be a positive duration`},
		{[]string{"--node-name=n", "--reconcile-interval=-1s"}, `--reconcile-interval: Invalid value: "-1s": must be a positive duration`},
		{[]string{"--node-name=n", "--evict-over-share-after=-5m"}, `--evict-over-share-after: Invalid value: "-5m0s": must be 0s (only report) or a positive duration`},
		{[]string{"--node-name=n", "--health-recovery=-1s"}, `--health-recovery: Invalid value: "-1s": must be a positive duration`},
		{[]string{"--node-name=n", "--health-recovery=0"}, `--health-recovery: Invalid value: "0s": must be a positive duration`},
		{[]string{"--node-name=n", "--metrics-port=70000"}, "--metrics-port: Invalid value: 70000: must be 1..65535"},
		// every bad flag is named at once
		{[]string{"--node-name=", "--usage-interval=0", "--memory-unit=KiB"}, "--node-name (or $NODE_NAME) is required\n--memory-unit: "},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := newCommand()
			cmd.SetArgs(tt.args)
			cmd.SetErr(new(strings.Builder))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
