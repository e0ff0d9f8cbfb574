package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

func TestHelpDocumentsEveryFlag(t *testing.T) {
	out, err := run("--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--kubeconfig", "in-cluster config", "--port", "--policy", "binpack", "fgd", "spread", "--config", "signingKeyFile", "/gpushare-scheduler"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

func TestBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("memoryUnit: TiB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--policy", "tetris"}, `policy: Unsupported value: "tetris"`},
		{[]string{"--config", bad}, "memoryUnit: Unsupported value"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "reading extender config"},
		{[]string{"--kubeconfig", filepath.Join(dir, "missing-kubeconfig")}, "loading kubeconfig"},
	} {
		if _, err := run(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
}
