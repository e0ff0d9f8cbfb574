// Package images builds the container images of gpupack's binaries for the
// end-to-end tests' nodes without a container engine, a registry or a pulled
// base image: it writes them as one `docker save` tarball, which
// `ctr -n k8s.io images import` loads into a node's containerd.
//
// The Dockerfiles in deploy/docker are the one description of the images:
// FromDockerfile reads a Dockerfile's final stage (binaries copied from the
// build stage, entrypoint, user, environment...) and Write reproduces it on a
// stand-in for the distroless base it names, made of a few fixed files and,
// for the glibc base, the host's (Debian 12) loader and libraries the binaries
// need. Only what a final stage can do without running anything is
// supported; anything else is an error rather than a different image.
//
// Two libraries do the work, on purpose: github.com/moby/buildkit's
// Dockerfile parser and instruction types (the parser Docker itself uses), so
// the Dockerfiles are read as Docker reads them rather than by hand; and
// github.com/google/go-containerregistry (the library ko and crane build
// images with), which writes images and tarballs in pure Go, without a
// daemon, from layers made reproducible here: fixed timestamps and owners,
// sorted entries, so the same inputs give the same digests. buildkit is
// pinned at v0.26.3, the newest release whose requirements raise none of the
// versions k8s.io/kubernetes pins in this module.
//
// The package needs neither the product's packages nor package cluster: it
// takes files already built and writes a tarball; building the binaries and
// importing the images is the caller's business.
package images
