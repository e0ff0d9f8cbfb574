// Package cluster brings up a local GPU-sharing cluster on a real control
// plane: etcd, kube-apiserver and kube-scheduler built from their Go
// modules, our extender, and simulated GPU nodes (Node objects, our device
// plugin on the mock NVML, and a test kubelet that drives it over its real
// gRPC sockets and runs simulated training jobs). As root it also runs real
// nodes (realnode.go: the kubelet, containerd, runc and kube-proxy, images
// built from this checkout; host.go says what they change on the machine),
// with kube-controller-manager beside the API server, onto which the chart
// is installed with helm.
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

// ImageTag tags the images built from this checkout (and is the version
// its binaries report).
const ImageTag = "dev"

// Binaries are the paths of the programs the cluster runs.
type Binaries struct {
	Etcd, APIServer, Scheduler string
	// ControllerManager, Kubelet and Proxy run real nodes.
	ControllerManager, Kubelet, Proxy string
	// Extender, DevicePlugin, Train and Inspect are ours, built from this
	// checkout (the extender as its image has it: pure Go); Pause is the
	// real nodes' pod sandbox.
	Extender, DevicePlugin, Train, Inspect, Pause string
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

// EnsureBinaries builds what is missing: the Kubernetes components into the
// cache (once: several minutes on two cores each), our binaries into ours
// (every run: seconds, they change with the checkout). realNodes adds what
// real nodes run. Progress goes to out.
func EnsureBinaries(ctx context.Context, ours string, realNodes bool, out io.Writer) (Binaries, error) {
	cp := filepath.Join(CacheDir(), "controlplane-"+KubernetesVersion+"-etcd-"+EtcdVersion)
	b := Binaries{
		Etcd: filepath.Join(cp, "etcd"), APIServer: filepath.Join(cp, "kube-apiserver"), Scheduler: filepath.Join(cp, "kube-scheduler"),
		ControllerManager: filepath.Join(cp, "kube-controller-manager"), Kubelet: filepath.Join(cp, "kubelet"), Proxy: filepath.Join(cp, "kube-proxy"),
		Extender: filepath.Join(ours, "gpupack-extender"), Train: filepath.Join(ours, "gpupack-train"),
		DevicePlugin: filepath.Join(ours, "gpupack-device-plugin"), Inspect: filepath.Join(ours, "kubectl-inspect-gpushare"),
		Pause: filepath.Join(ours, "pause"),
	}
	mod := moduleDir()
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, strings.Split(KubernetesVersion, ".")[1])
	// Ours are built as deploy/docker's Dockerfiles build them.
	ourFlags := "-s -w -X github.com/gpupack/gpupack/extender.Version=" + ImageTag + " -X main.Version=" + ImageTag
	builds := []struct {
		what, dir, pkg, to, ldflags string
		cached, cgo                 bool
	}{
		{"kube-apiserver " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-apiserver", b.APIServer, ldflags, true, false},
		{"kube-scheduler " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-scheduler", b.Scheduler, ldflags, true, false},
		{"etcd " + EtcdVersion, filepath.Join(mod, "tools", "etcd"), "go.etcd.io/etcd/server/v3", b.Etcd, "-s -w", true, false},
		{"gpupack-extender", mod, "github.com/gpupack/gpupack/cmd/gpupack-extender", b.Extender, ourFlags, false, false},
		{"gpupack-train", mod, "github.com/gpupack/gpupack/cmd/gpupack-train", b.Train, ourFlags, false, true},
		{"kubectl-inspect-gpushare", mod, "github.com/gpupack/gpupack/cmd/kubectl-inspect-gpushare", b.Inspect, ourFlags, false, false},
	}
	if realNodes {
		builds = append(builds, []struct {
			what, dir, pkg, to, ldflags string
			cached, cgo                 bool
		}{
			{"kube-controller-manager " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-controller-manager", b.ControllerManager, ldflags, true, false},
			{"kubelet " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kubelet", b.Kubelet, ldflags, true, false},
			{"kube-proxy " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-proxy", b.Proxy, ldflags, true, false},
			{"gpupack-device-plugin", mod, "github.com/gpupack/gpupack/cmd/gpupack-device-plugin", b.DevicePlugin, ourFlags, false, true},
			{"pause", mod, "github.com/gpupack/gpupack/test/cmd/pause", b.Pause, "-s -w", false, false},
		}...)
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
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", bd.ldflags, "-o", tmp, bd.pkg)
		cmd.Dir = bd.dir
		cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations", "CGO_ENABLED=0")
		if bd.cgo {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=1")
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
