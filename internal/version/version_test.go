package version

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	withMain := func(v string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/gpupack/gpupack", Version: v}}
	}
	for _, tc := range []struct {
		name   string
		linked string
		info   *debug.BuildInfo
		ok     bool
		want   string
	}{
		{name: "set at link time", linked: "v0.3.0", info: withMain("v0.2.0"), ok: true, want: "v0.3.0"},
		{name: "describe after a tag", linked: "v0.3.0-5-g15e3111-dirty", ok: false, want: "v0.3.0-5-g15e3111-dirty"},
		{name: "go install at a tag", info: withMain("v0.3.0"), ok: true, want: "v0.3.0"},
		{name: "go build in a checkout", info: withMain("v0.0.0-20261130201500-15e3111abcde+dirty"), ok: true, want: "v0.0.0-20261130201500-15e3111abcde+dirty"},
		{name: "go build without vcs stamping", info: withMain("(devel)"), ok: true, want: Dev},
		{name: "no version recorded", info: withMain(""), ok: true, want: Dev},
		{name: "no build info", ok: false, want: Dev},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.linked, tc.info, tc.ok); got != tc.want {
				t.Errorf("resolve(%q, ...) = %q, want %q", tc.linked, got, tc.want)
			}
		})
	}
}
