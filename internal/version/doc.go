// Package version is the version of gpupack every binary reports (--version,
// the extender's /version route, the API clients' user agent), and the one
// place the build sets it.
//
// make and the Dockerfiles set Version at link time from git tags
// (hack/version.sh: the tag itself, v0.3.0, on a tagged commit; git
// describe's v0.3.0-5-g<sha> after it; v0.0.0-dev.g<sha> where no tag is
// reachable; -dirty appended for uncommitted changes), so that the binaries,
// the images and the chart's appVersion carry the same string. A build
// without that flag (go install ...@v0.3.0, go build) reports the main
// module's version the go command recorded, else Dev.
//
// It depends on the standard library only, so that every command, cgo or
// not, can import it.
package version
