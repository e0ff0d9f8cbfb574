package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin/config"
)

// TestConfigPrecedence: a flag set on the command line overrides the
// file, the file overrides the defaults; an invalid value is refused with
// the flag's name, or the file's and its field.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := func(s string) string {
		p := filepath.Join(t.TempDir(), "dp.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tuned := file("version: v1\nusageInterval: 2s\nreconcileInterval: 1m\nmetricsPort: 0\nignoredXids: []\ncgpuDisable: true\n")
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(*config.Config) bool
	}{
		{"no file, no flag: the defaults", nil, "", func(c *config.Config) bool {
			return c.UsageInterval.Duration == config.DefaultUsageInterval && *c.MetricsPort == config.DefaultMetricsPort && len(c.IgnoredXids) == 6
		}},
		{"the file over the defaults", []string{"--config-file=" + tuned}, "", func(c *config.Config) bool {
			return c.UsageInterval.Duration == 2*time.Second && c.ReconcileInterval.Duration == time.Minute && *c.MetricsPort == 0 &&
				len(c.IgnoredXids) == 0 && c.CGPUDisable && c.HealthRecovery.Duration == config.DefaultHealthRecovery
		}},
		{"a flag over the file", []string{"--config-file=" + tuned, "--usage-interval=7s", "--metrics-port=9000"}, "", func(c *config.Config) bool {
			return c.UsageInterval.Duration == 7*time.Second && *c.MetricsPort == 9000 && c.ReconcileInterval.Duration == time.Minute
		}},
		{"a flag set to its default still overrides the file", []string{"--config-file=" + tuned, "--usage-interval=5s", "--cgpu-disable=false", "--ignored-xids=13"}, "", func(c *config.Config) bool {
			return c.UsageInterval.Duration == 5*time.Second && !c.CGPUDisable && len(c.IgnoredXids) == 1
		}},
		{"an invalid file value", []string{"--config-file=" + file("version: v1\nusageInterval: 0s\n")}, `: usageInterval: Invalid value: "0s": must be a positive duration`, nil},
		{"an invalid file value a flag overrides", []string{"--config-file=" + file("version: v1\nusageInterval: 0s\n"), "--usage-interval=1s"}, "", func(c *config.Config) bool {
			return c.UsageInterval.Duration == time.Second
		}},
		{"an invalid flag over a valid file", []string{"--config-file=" + tuned, "--usage-interval=0"}, `--usage-interval: Invalid value: "0s"`, nil},
		{"an unknown field", []string{"--config-file=" + file("version: v1\nusage-interval: 1s\n")}, `usage-interval: error unmarshaling JSON: while decoding JSON: json: unknown field "usage-interval"`, nil},
		{"a wrong version", []string{"--config-file=" + file("version: v0\n")}, `version: Unsupported value: "v0"`, nil},
		{"a missing file", []string{"--config-file=" + filepath.Join(dir, "none.yaml")}, "reading device plugin config", nil},
		{"a file and a folder", []string{"--config-file=" + tuned, "--config-dir=" + dir}, "--config-file and --config-dir: set one, not both", nil},
		{"a bad poll interval", []string{"--config-poll-interval=0s"}, "--config-poll-interval=0s: want a positive duration", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, f := newCommandFlags()
			if err := cmd.Flags().Parse(append([]string{"--node-name=n1"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			noClient := func() (kubernetes.Interface, error) { t.Fatal("no API client is needed"); return nil, nil }
			_, c, err := f.resolve(context.Background(), cmd.Flags(), f.source(), noClient)
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
}

// TestConfigByNodeLabel: with --config-dir, the node's label picks its
// configuration, the default without one; a label naming none is refused
// at start with the node, the label and the names there, and a Warning
// event on the node. (The API server is a fake clientset here; the e2e
// test runs the plugin against a real one.)
func TestConfigByNodeLabel(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"default.yaml": "version: v1\nusageInterval: 5s\n",
		"big.yaml":     "version: v1\nusageInterval: 1s\n",
		"broken.yaml":  "version: v1\nusageInterval: 0s\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name      string
		labels    map[string]string
		args      []string
		wantName  string
		wantUsage time.Duration
		wantErr   string
	}{
		{"labelled", map[string]string{contract.LabelDevicePluginConfig: "big"}, nil, "big", time.Second, ""},
		{"not labelled: the default", nil, nil, "default", 5 * time.Second, ""},
		{"another default", nil, []string{"--config-default=big"}, "big", time.Second, ""},
		{"another label", map[string]string{"pool": "big"}, []string{"--config-label=pool"}, "big", time.Second, ""},
		{"a flag over the labelled file", map[string]string{contract.LabelDevicePluginConfig: "big"}, []string{"--usage-interval=3s"}, "big", 3 * time.Second, ""},
		{"a label naming no configuration", map[string]string{contract.LabelDevicePluginConfig: "huge"}, nil, "", 0,
			`node n1: no such device plugin configuration: node label gpupack.io/device-plugin.config="huge" names no file huge.yaml in ` + dir + `; configurations there: big, broken, default`},
		{"a label naming an invalid configuration", map[string]string{contract.LabelDevicePluginConfig: "broken"}, nil, "", 0,
			`broken.yaml: usageInterval: Invalid value: "0s"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: tt.labels}})
			cmd, f := newCommandFlags()
			if err := cmd.Flags().Parse(append([]string{"--node-name=n1", "--config-dir=" + dir}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			sel, c, err := f.resolve(context.Background(), cmd.Flags(), f.source(), func() (kubernetes.Interface, error) { return cs, nil })
			events, lerr := cs.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
			if lerr != nil {
				t.Fatal(lerr)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if len(events.Items) != 1 || events.Items[0].Reason != ReasonConfigRefused || events.Items[0].Type != corev1.EventTypeWarning ||
					events.Items[0].InvolvedObject.Name != "n1" || !strings.Contains(events.Items[0].Message, tt.wantErr) {
					t.Errorf("events %+v, want one Warning %s on n1 saying %q", events.Items, ReasonConfigRefused, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sel.Name != tt.wantName || c.UsageInterval.Duration != tt.wantUsage {
				t.Errorf("ran %q with usageInterval %v, want %q with %v", sel.Name, c.UsageInterval.Duration, tt.wantName, tt.wantUsage)
			}
			if len(events.Items) != 0 {
				t.Errorf("events %+v, want none", events.Items)
			}
		})
	}
}

// TestConfigChangeEndsThePlugin: when the node's label names another
// configuration, watchConfig ends the plugin's context with
// errConfigChanged (run then returns nil: the DaemonSet restarts it); a
// label naming none is refused with a Warning event and the plugin runs on.
func TestConfigChangeEndsThePlugin(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"default.yaml", "big.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("version: v1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	cmd, f := newCommandFlags()
	if err := cmd.Flags().Parse([]string{"--node-name=n1", "--config-dir=" + dir, "--config-poll-interval=10ms"}); err != nil {
		t.Fatal(err)
	}
	sel, _, err := f.resolve(ctx, cmd.Flags(), f.source(), func() (kubernetes.Interface, error) { return cs, nil })
	if err != nil || sel.Name != "default" {
		t.Fatalf("selected %+v, %v", sel, err)
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	go func() { f.watchConfig(pctx, cmd.Flags(), f.source(), sel, cs, cancel); close(done) }()
	label := func(v string) {
		t.Helper()
		n, err := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Labels = map[string]string{contract.LabelDevicePluginConfig: v}
		if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	label("huge")
	deadline := time.After(20 * time.Second)
	for {
		events, err := cs.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(events.Items) > 0 {
			if !strings.Contains(events.Items[0].Message, `keeping "default"`) || !strings.Contains(events.Items[0].Message, `"huge" names no file`) {
				t.Errorf("event %q", events.Items[0].Message)
			}
			break
		}
		select {
		case <-deadline:
			t.Fatal("no event for a label naming no configuration")
		case <-done:
			t.Fatal("a label naming no configuration ended the plugin")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if pctx.Err() != nil {
		t.Fatal("a label naming no configuration ended the plugin")
	}
	label("big")
	select {
	case <-done:
	case <-deadline:
		t.Fatal("the plugin did not end when its label named another configuration")
	}
	if context.Cause(pctx) != errConfigChanged {
		t.Errorf("cause %v, want errConfigChanged", context.Cause(pctx))
	}
}
