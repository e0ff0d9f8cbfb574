package version

import "runtime/debug"

// Version is set at link time:
//
//	-ldflags "-X github.com/gpupack/gpupack/internal/version.Version=v0.3.0"
//
// Read it through Get, which falls back when it is empty.
var Version string

// Dev is the version of a build that knows none: semver-valid, and lower
// than any release.
const Dev = "v0.0.0-dev"

// Get returns the version this binary was built as: Version where the link
// set it; else the main module's version the go command recorded (v0.3.0 for
// `go install github.com/gpupack/gpupack/cmd/kubectl-inspect-gpushare@v0.3.0`,
// a pseudo-version for a go build in a git checkout); else Dev.
func Get() string {
	info, ok := debug.ReadBuildInfo()
	return resolve(Version, info, ok)
}

// resolve is Get with its inputs given.
func resolve(linked string, info *debug.BuildInfo, ok bool) string {
	if linked != "" {
		return linked
	}
	if ok && info != nil && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return Dev
}
