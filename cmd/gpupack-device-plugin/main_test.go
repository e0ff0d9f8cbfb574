package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
			lib, err := openNVML(&flags{nvmlSpec: tt.spec, node: "n1", mockState: filepath.Join(dir, "state.json")})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			devs, err := lib.Devices()
			if err != nil || len(devs) != tt.wantCards {
				t.Errorf("%d devices, %v", len(devs), err)
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
