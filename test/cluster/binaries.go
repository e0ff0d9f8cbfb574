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
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
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
	return ensureBinaries(ctx, ours, realNodes, realNodes, out)
}

// ensureBinaries is EnsureBinaries; nodeComponents adds the Kubernetes
// components real nodes run (kube-controller-manager, kubelet, kube-proxy)
// without the rest of what real nodes need, to have them in the cache.
func ensureBinaries(ctx context.Context, ours string, realNodes, nodeComponents bool, out io.Writer) (Binaries, error) {
	cp := filepath.Join(CacheDir(), "controlplane-"+KubernetesVersion+"-etcd-"+EtcdVersion)
	b := Binaries{
		Etcd: filepath.Join(cp, "etcd"), APIServer: filepath.Join(cp, "kube-apiserver"), Scheduler: filepath.Join(cp, "kube-scheduler"),
		ControllerManager: filepath.Join(cp, "kube-controller-manager"), Kubelet: filepath.Join(cp, "kubelet"), Proxy: filepath.Join(cp, "kube-proxy"),
		Extender: filepath.Join(ours, "gpupack-extender"), Train: filepath.Join(ours, "gpupack-train"),
		DevicePlugin: filepath.Join(ours, "gpupack-device-plugin"), Inspect: filepath.Join(ours, "kubectl-inspect-gpushare"),
		Pause: filepath.Join(ours, "pause"),
	}
	mod := moduleDir()
	// Ours are built in the product's module, with the versions its go.mod
	// pins, as the images and releases are (the test module's versions of
	// a dependency can be newer).
	product := filepath.Dir(mod)
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, strings.Split(KubernetesVersion, ".")[1])
	// Ours are linked as deploy/docker's Dockerfiles link them.
	ourFlags := "-s -w -X github.com/gpupack/gpupack/internal/version.Version=" + ImageTag
	builds := []build{
		{"kube-apiserver " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-apiserver", b.APIServer, ldflags, true, true},
		{"kube-scheduler " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-scheduler", b.Scheduler, ldflags, true, true},
		{"etcd " + EtcdVersion, filepath.Join(mod, "tools", "etcd"), "go.etcd.io/etcd/server/v3", b.Etcd, "-s -w", true, true},
		{"gpupack-extender", product, "github.com/gpupack/gpupack/cmd/gpupack-extender", b.Extender, ourFlags, false, false},
		{"gpupack-train", product, "github.com/gpupack/gpupack/cmd/gpupack-train", b.Train, ourFlags, false, true},
		{"kubectl-inspect-gpushare", product, "github.com/gpupack/gpupack/cmd/kubectl-inspect-gpushare", b.Inspect, ourFlags, false, false},
	}
	if realNodes || nodeComponents {
		builds = append(builds,
			build{"kube-controller-manager " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-controller-manager", b.ControllerManager, ldflags, true, true},
			build{"kubelet " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kubelet", b.Kubelet, ldflags, true, true},
			build{"kube-proxy " + KubernetesVersion, mod, "k8s.io/kubernetes/cmd/kube-proxy", b.Proxy, ldflags, true, true},
		)
	}
	if realNodes {
		builds = append(builds,
			build{"gpupack-device-plugin", product, "github.com/gpupack/gpupack/cmd/gpupack-device-plugin", b.DevicePlugin, ourFlags, false, true},
			build{"pause", mod, "github.com/gpupack/gpupack/test/cmd/pause", b.Pause, "-s -w", false, false},
		)
	}
	// What is missing is built by one go build per module and settings, so
	// that the programs' own packages and links overlap. Everything is
	// built with the settings make verify and go vet compile the same
	// packages with (no -trimpath; cgo as the machine has it, and for ours
	// only where their Dockerfiles use it: go-nvml), so that a cold run
	// compiles each package once per setting, not once more for these
	// builds: on 2 cores each extra setting is about two minutes of
	// client-go and its kin. -trimpath changes only the file names in a
	// binary, which no test reads.
	type group struct {
		dir, ldflags string
		cgo, cached  bool
	}
	var order []group
	todo := map[group][]build{}
	for _, bd := range builds {
		if bd.cached {
			if _, err := os.Stat(bd.to); err == nil {
				continue
			}
			fmt.Fprintf(out, "building %s into %s (once; several minutes on 2 cores)...\n", bd.what, filepath.Dir(bd.to))
		}
		g := group{bd.dir, bd.ldflags, bd.cgo, bd.cached}
		if todo[g] == nil {
			order = append(order, g)
		}
		todo[g] = append(todo[g], bd)
	}
	// The groups are built at once: each go build has stretches where it
	// leaves a core idle (linking, the long compiles that everything else
	// waits on), which another fills.
	var (
		mu   sync.Mutex
		errs = make([]error, len(order))
		wg   sync.WaitGroup
	)
	progress := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	})
	for i, g := range order {
		wg.Go(func() { errs[i] = goBuild(ctx, g.dir, g.ldflags, g.cgo, todo[g], progress) })
	}
	wg.Wait()
	return b, errors.Join(errs...)
}

// writerFunc is an io.Writer of a func.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// build is a program to build: what it is, the module folder it is built
// in, its package, where it goes, its link flags; cached programs are
// built once into the cache, the others every run.
type build struct {
	what, dir, pkg, to, ldflags string
	cached, cgo                 bool
}

// goBuild builds the programs, all in one module with the same settings,
// in one go build, then moves each where it goes.
func goBuild(ctx context.Context, dir, ldflags string, cgo bool, bs []build, out io.Writer) error {
	start := time.Now()
	if err := os.MkdirAll(filepath.Dir(bs[0].to), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(bs[0].to), ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-ldflags", ldflags, "-o"}
	if len(bs) == 1 {
		args = append(args, filepath.Join(tmp, filepath.Base(bs[0].to)), bs[0].pkg)
	} else {
		args = append(args, tmp+"/")
		for _, bd := range bs {
			args = append(args, bd.pkg)
		}
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations", "CGO_ENABLED=0")
	if cgo {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=1")
	}
	var names []string
	for _, bd := range bs {
		names = append(names, bd.what)
	}
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", strings.Join(names, ", "), err, msg)
	}
	for _, bd := range bs {
		built := filepath.Join(tmp, filepath.Base(bd.to))
		if len(bs) > 1 {
			built = filepath.Join(tmp, path.Base(bd.pkg))
		}
		if err := os.MkdirAll(filepath.Dir(bd.to), 0o755); err != nil {
			return err
		}
		// The temporary folder is beside the programs (a group's go to one
		// folder: the cache, or ours), so the rename is a move.
		if err := os.Rename(built, bd.to); err != nil {
			return err
		}
		if bd.cached {
			fmt.Fprintf(out, "built %s in %s\n", bd.what, time.Since(start).Round(time.Second))
		}
	}
	return nil
}
