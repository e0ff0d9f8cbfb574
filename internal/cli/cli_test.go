package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
)

func TestLogging(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		// the line logged must be a JSON object with these fields
		json map[string]any
	}{
		{name: "json", args: []string{"--logging-format=json"}, json: map[string]any{"msg": "hello", "node": "n1", "v": 0.0}},
		{name: "json and a verbosity", args: []string{"--logging-format=json", "-v=4"}, json: map[string]any{"msg": "hello", "node": "n1", "v": 0.0}},
		{name: "unknown format", args: []string{"--logging-format=xml"}, wantErr: `--logging-format is text or json): format: Invalid value: "xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if err := logsapi.ResetForTest(nil); err != nil {
					t.Fatal(err)
				}
			}()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			l := AddLoggingFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := l.apply(&logsapi.LoggingOptions{ErrorStream: &out, InfoStream: &out})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "logging flags") {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			klog.Background().Info("hello", "node", "n1")
			klog.Flush()
			line, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("not a JSON line: %q: %v", out.String(), err)
			}
			for k, want := range tc.json {
				if got[k] != want {
					t.Errorf("%s = %v, want %v (line %s)", k, got[k], want, line)
				}
			}
			if _, ok := got["ts"]; !ok {
				t.Errorf("no ts in %s", line)
			}
		})
	}
}

func TestRestConfigTalksProtobuf(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := RestConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://127.0.0.1:6443" {
		t.Errorf("Host = %q", rc.Host)
	}
	if rc.ContentType != "application/vnd.kubernetes.protobuf" || rc.AcceptContentTypes != "application/vnd.kubernetes.protobuf,application/json" {
		t.Errorf("ContentType %q, AcceptContentTypes %q: want protobuf, JSON accepted", rc.ContentType, rc.AcceptContentTypes)
	}
	if _, err := RestConfig(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing kubeconfig: no error")
	}
}
