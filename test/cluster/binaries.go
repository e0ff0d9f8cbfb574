// Package cluster brings up a local GPU-sharing cluster on a real control
// plane: etcd, kube-apiserver and kube-scheduler built from their Go
// modules, our extender, and simulated GPU nodes (Node objects, our device
// plugin on the mock NVML, and a test kubelet that drives it over its real
// gRPC sockets and runs simulated training jobs).
package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Versions of the control plane (the test module and test/tools/etcd pin
// the same).
const (
	KubernetesVersion = "v1.36.3"
	EtcdVersion       = "v3.6.8"
)

// Binaries are the paths of the programs the cluster runs.
type Binaries struct {
	Etcd, APIServer, Scheduler string
	// Extender, DevicePlugin and Train are ours, built from this checkout.
	Extender, Train string
}

// moduleDir is the test module's root (this file is in cluster/).
func moduleDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// CacheDir is where the control-plane binaries are kept between runs
// ($GPUPACK_CACHE, else the user cache folder).
func CacheDir() string {
	if d := os.Getenv("GPUPACK_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "gpupack")
}

// EnsureBinaries builds what is missing: the control plane into the cache
// (once: several minutes on two cores), our binaries into ours (every run:
// seconds, they change with the checkout). Progress goes to out.
func EnsureBinaries(ctx context.Context, ours string, out io.Writer) (Binaries, error) {
	cp := filepath.Join(CacheDir(), "controlplane-"+KubernetesVersion+"-etcd-"+EtcdVersion)
	b := Binaries{
		Etcd: filepath.Join(cp, "etcd"), APIServer: filepath.Join(cp, "kube-apiserver"), Scheduler: filepath.Join(cp, "kube-scheduler"),
		Extender: filepath.Join(ours, "gpupack-extender"), Train: filepath.Join(ours, "gpupack-train"),
	}
	mod := moduleDir()
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, strings.Split(KubernetesVersion, ".")[1])
	builds := []struct {
		what, dir, pkg, to, ldflags string
		cached                      bool
	}{
		{"kube-apiserver " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-apiserver", b.APIServer, ldflags, true},
		{"kube-scheduler " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-scheduler", b.Scheduler, ldflags, true},
		{"etcd " + EtcdVersion, filepath.Join(mod, "tools", "etcd"), "go.etcd.io/etcd/server/v3", b.Etcd, "-s -w", true},
		{"gpupack-extender", mod, "github.com/gpupack/gpupack/cmd/gpupack-extender", b.Extender, "", false},
		{"gpupack-train", mod, "github.com/gpupack/gpupack/cmd/gpupack-train", b.Train, "", false},
	}
	for _, bd := range builds {
		if bd.cached {
			if _, err := os.Stat(bd.to); err == nil {
				continue
			}
			fmt.Fprintf(out, "building %s into %s (once; several minutes on 2 cores)...\n", bd.what, filepath.Dir(bd.to))
		}
		start := time.Now()
		tmp := bd.to + ".tmp"
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", bd.ldflags, "-o", tmp, bd.pkg)
		cmd.Dir = bd.dir
		cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
		if bd.cached {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
		}
		if msg, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("building %s: %w\n%s", bd.what, err, msg)
		}
		if err := os.Rename(tmp, bd.to); err != nil {
			return b, err
		}
		if bd.cached {
			fmt.Fprintf(out, "built %s in %s\n", bd.what, time.Since(start).Round(time.Second))
		}
	}
	return b, nil
}
