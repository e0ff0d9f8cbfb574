package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadDefaultValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		file    string
		wantErr string
		check   func(*Config) bool
	}{
		{"empty file takes every default", "", "", func(c *Config) bool {
			return c.Port == DefaultPort && c.Policy == "fill" && c.MemoryUnit == "GiB" && c.BindTimeout.Duration == 30*time.Second
		}},
		{"fields are read", "port: 12345\npolicy: binpack\nmemoryUnit: MiB\nbindTimeout: 5s\n", "", func(c *Config) bool {
			return c.Port == 12345 && c.Policy == "binpack" && c.MemoryUnit == "MiB" && c.BindTimeout.Duration == 5*time.Second
		}},
		{"an unknown field is an error", "prot: 1\n", `unknown field "prot"`, nil},
		{"an unknown policy", "policy: tetris\n", `policy: Unsupported value: "tetris": supported values: "bestfit", "binpack", "fgd", "fill", "packing", "random", "spread", "default"`, nil},
		{"a bad unit", "memoryUnit: TiB\n", "memoryUnit: Unsupported value", nil},
		{"a bad port", "port: 70000\n", "port: Invalid value: 70000", nil},
		{"coverage out of range", "workloadCoverage: 1.5\n", "workloadCoverage: Invalid value: 1.5", nil},
		{"coverage", "workloadCoverage: 0.9\n", "", func(c *Config) bool { return c.WorkloadCoverage == 0.9 }},
		{"no coverage: the policy's own", "", "", func(c *Config) bool { return c.WorkloadCoverage == 0 }},
		{"coverage under its former name", "fgdCoverage: 0.9\n", "", func(c *Config) bool { return c.WorkloadCoverage == 0.9 && c.DeprecatedFGDCoverage == 0 }},
		{"coverage under both names", "workloadCoverage: 0.9\nfgdCoverage: 0.8\n", "fgdCoverage: Forbidden: is workloadCoverage's former name", nil},
		{"TLS without a key", "tls:\n  certFile: a\n", "tls.keyFile: Required value", nil},
		{"filter keeps the fitting nodes by default", "", "", func(c *Config) bool { return c.FilterKeeps == FilterKeepsFitting }},
		{"filter keeps the best nodes", "filterKeeps: best\n", "", func(c *Config) bool { return c.FilterKeeps == FilterKeepsBest }},
		{"filter keeps an unknown set", "filterKeeps: top\n", `filterKeeps: Unsupported value: "top": supported values: "fitting", "best"`, nil},
		{"a probe address", "address: 127.0.0.1\nprobeAddress: \":8081\"\n", "", func(c *Config) bool { return c.ProbeAddress == ":8081" }},
		{"a probe address without a port", "probeAddress: 8081\n", "probeAddress: Invalid value", nil},
		{"a probe address on the verbs' port", "probeAddress: \":39999\"\n", "must use another port than port", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(write(tt.file))
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
