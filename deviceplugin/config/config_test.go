package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func write(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefaultValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		file    string
		wantErr string
		check   func(*Config) bool
	}{
		{"a version alone takes every default", "version: v1\n", "", func(c *Config) bool {
			return cmp.Equal(c, Default())
		}},
		{"every field is read", `version: v1
nvml: mock:t4x4
nvmlLibrary: /lib/libnvidia-ml.so.1
mockState: /var/run/gpupack/nvml.json
memoryUnit: MiB
devicePluginDir: /k/device-plugins
procRoot: /host/proc
podResourcesSocket: ""
metricsPort: 0
evictOverShareAfter: 10m
usageInterval: 2s
reconcileInterval: 1m
healthRecovery: 30s
ignoredXids: [13, 79]
cgpuDisable: true
`, "", func(c *Config) bool {
			return cmp.Equal(c, &Config{
				Version: "v1", NVML: "mock:t4x4", NVMLLibrary: "/lib/libnvidia-ml.so.1", MockState: "/var/run/gpupack/nvml.json",
				MemoryUnit: "MiB", DevicePluginDir: "/k/device-plugins", ProcRoot: "/host/proc", PodResourcesSocket: ptr(""),
				MetricsPort: ptr(0), EvictOverShareAfter: &metav1.Duration{Duration: 10 * time.Minute},
				UsageInterval: &metav1.Duration{Duration: 2 * time.Second}, ReconcileInterval: &metav1.Duration{Duration: time.Minute},
				HealthRecovery: &metav1.Duration{Duration: 30 * time.Second}, IgnoredXids: []uint64{13, 79}, CGPUDisable: true,
			})
		}},
		{"JSON is read too", `{"version": "v1", "usageInterval": "1s"}`, "", func(c *Config) bool { return c.UsageInterval.Duration == time.Second }},
		{"an empty Xid list ignores none", "version: v1\nignoredXids: []\n", "", func(c *Config) bool { return c.IgnoredXids != nil && len(c.IgnoredXids) == 0 }},
		{"no Xid list: the default one", "version: v1\n", "", func(c *Config) bool { return slices.Equal(c.IgnoredXids, DefaultIgnoredXids) }},
		{"an unknown field", "version: v1\nusageIntervall: 5s\n", `c.yaml: usageIntervall: error unmarshaling JSON: while decoding JSON: json: unknown field "usageIntervall"`, nil},
		{"a nested unknown field", "version: v1\nmetricsPort: {port: 1}\n", "metricsPort", nil},
		{"no version", "usageInterval: 5s\n", "version: Required value", nil},
		{"an unknown version", "version: v2\n", `version: Unsupported value: "v2": supported values: "v1"`, nil},
		{"a bad duration", "version: v1\nusageInterval: 5 minutes\n", `c.yaml: usageInterval: error unmarshaling JSON: while decoding JSON: time: unknown unit`, nil},
		{"a zero interval (a ticker used to panic)", "version: v1\nusageInterval: 0s\n", `usageInterval: Invalid value: "0s": must be a positive duration`, nil},
		{"a negative interval", "version: v1\nreconcileInterval: -1s\n", `reconcileInterval: Invalid value: "-1s": must be a positive duration`, nil},
		{"a zero recovery", "version: v1\nhealthRecovery: 0s\n", `healthRecovery: Invalid value: "0s"`, nil},
		{"a zero eviction delay: only report", "version: v1\nevictOverShareAfter: 0s\n", "", func(c *Config) bool { return c.EvictOverShareAfter.Duration == 0 }},
		{"a negative eviction delay", "version: v1\nevictOverShareAfter: -1m\n", `evictOverShareAfter: Invalid value: "-1m0s": must be 0s (only report)`, nil},
		{"a bad port", "version: v1\nmetricsPort: 70000\n", "metricsPort: Invalid value: 70000", nil},
		{"a negative port", "version: v1\nmetricsPort: -1\n", "metricsPort: Invalid value: -1", nil},
		{"a bad unit", "version: v1\nmemoryUnit: KiB\n", `memoryUnit: Unsupported value: "KiB"`, nil},
		{"bad cards", "version: v1\nnvml: fake\n", `nvml: Invalid value: "fake"`, nil},
		{"a port of the wrong type", "version: v1\nmetricsPort: \"9445\"\n", "metricsPort: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string", nil},
		{"a negative Xid", "version: v1\nignoredXids: [13, -1]\n", "ignoredXids: error", nil},
		{"not a map", "- version: v1\n", "cannot unmarshal array", nil},
		{"every error at once", "version: v1\nusageInterval: 0s\nmemoryUnit: KiB\n", "memoryUnit: Unsupported value: \"KiB\": supported values: \"GiB\", \"MiB\", usageInterval: Invalid value", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(write(t, dir, "c.yaml", tt.file))
			if err == nil {
				SetDefaults(c)
				err = Validate(c).ToAggregate()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("got %+v", c)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing file loaded")
	}
}

// TestDefaultIgnoredXids: the file's default list is the health watch's.
func TestDefaultIgnoredXids(t *testing.T) {
	if !slices.Equal(Default().IgnoredXids, DefaultIgnoredXids) || Default().IgnoredXids == nil {
		t.Errorf("default ignoredXids %v", Default().IgnoredXids)
	}
}

// configMapDir is a folder as the kubelet mounts a ConfigMap: the keys are
// links into a hidden, timestamped folder, through ..data.
func configMapDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_11_30_21_00_00.1")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range files {
		write(t, ts, k, v)
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSelect(t *testing.T) {
	const label = "gpupack.io/device-plugin.config"
	dir := configMapDir(t, map[string]string{
		"default.yaml": "version: v1\n",
		"big.yaml":     "version: v1\nusageInterval: 1s\n",
		"notes.txt":    "not a configuration",
	})
	empty := t.TempDir()
	tests := []struct {
		name     string
		src      Source
		labels   map[string]string
		wantName string
		labelled bool
		wantErr  string
	}{
		{"the label picks", Source{Dir: dir, Label: label, Default: "default"}, map[string]string{label: "big"}, "big", true, ""},
		{"no label: the default", Source{Dir: dir, Label: label, Default: "default"}, map[string]string{"other": "big"}, "default", false, ""},
		{"no label, another default", Source{Dir: dir, Label: label, Default: "big"}, nil, "big", false, ""},
		{"a label that names no configuration", Source{Dir: dir, Label: label, Default: "default"}, map[string]string{label: "huge"},
			"", false, `node label gpupack.io/device-plugin.config="huge" names no file huge.yaml in ` + dir + `; configurations there: big, default`},
		{"a default that is not there", Source{Dir: dir, Label: label, Default: "small"}, nil,
			"", false, `the node has no label gpupack.io/device-plugin.config, and the default configuration "small" (file small.yaml) is not in ` + dir + `; configurations there: big, default`},
		{"an empty folder", Source{Dir: empty, Label: label, Default: "default"}, nil, "", false, "configurations there: none"},
		{"a missing folder", Source{Dir: filepath.Join(empty, "no"), Label: label, Default: "default"}, nil, "", false, "listing device plugin configs"},
		{"no file: nothing selected", Source{Label: label, Default: "default"}, map[string]string{label: "big"}, "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := tt.src.Select(tt.labels)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantName == "" {
				if sel != nil {
					t.Fatalf("selected %+v, want nothing", sel)
				}
				return
			}
			if sel.Name != tt.wantName || sel.Labelled != tt.labelled || sel.Path != filepath.Join(dir, tt.wantName+".yaml") {
				t.Errorf("selected %q (labelled %v) at %s", sel.Name, sel.Labelled, sel.Path)
			}
			if _, err := sel.Config(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("an unknown name is ErrUnknownConfig", func(t *testing.T) {
		_, err := Source{Dir: dir, Label: label, Default: "x"}.Select(nil)
		if !errors.Is(err, ErrUnknownConfig) {
			t.Errorf("err = %v", err)
		}
	})
}

// TestWatch: a change of label or of file content is seen; a change to a
// name the folder does not hold, or to a configuration Check refuses, is
// refused once and the watch goes on.
func TestWatch(t *testing.T) {
	const label = "l"
	dir := t.TempDir()
	write(t, dir, "default.yaml", "version: v1\n")
	write(t, dir, "big.yaml", "version: v1\nusageInterval: 1s\n")
	src := Source{Dir: dir, Label: label, Default: "default"}
	labels := make(chan map[string]string, 1)
	cur := map[string]string{}
	w := Watcher{
		Source: src, Every: 10 * time.Millisecond,
		Labels: func(context.Context) (map[string]string, error) {
			select {
			case cur = <-labels:
			default:
			}
			return cur, nil
		},
		Check: func(s *Selection) error {
			c, err := s.Config()
			if err != nil {
				return err
			}
			SetDefaults(c)
			return Validate(c).ToAggregate()
		},
	}
	var refused []string
	w.Refused = func(err error) { refused = append(refused, err.Error()) }
	current, err := src.Select(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Unknown name, then back to the same: refused once; nothing returned.
	labels <- map[string]string{label: "huge"}
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	if next, err := w.Wait(short, current); err == nil {
		t.Fatalf("a label naming no configuration was taken: %+v", next)
	}
	stop()
	if len(refused) != 1 || !strings.Contains(refused[0], `"huge" names no file huge.yaml`) {
		t.Errorf("refusals %q, want one naming huge", refused)
	}

	// The label names another configuration: taken.
	labels <- map[string]string{label: "big"}
	next, err := w.Wait(ctx, current)
	if err != nil || next.Name != "big" {
		t.Fatalf("next %+v, %v", next, err)
	}

	// The selected file changes to an invalid one: refused; to a valid one: taken.
	write(t, dir, "big.yaml", "version: v1\nusageInterval: 0s\n")
	refused = nil
	short, stop = context.WithTimeout(ctx, 200*time.Millisecond)
	if n, err := w.Wait(short, next); err == nil {
		t.Fatalf("an invalid file was taken: %+v", n)
	}
	stop()
	if len(refused) != 1 || !strings.Contains(refused[0], "usageInterval: Invalid value") {
		t.Errorf("refusals %q", refused)
	}
	write(t, dir, "big.yaml", "version: v1\nusageInterval: 3s\n")
	again, err := w.Wait(ctx, next)
	if err != nil || again.Name != "big" || !strings.Contains(string(again.Data), "3s") {
		t.Fatalf("again %+v, %v", again, err)
	}
}
