package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin"
	"github.com/gpupack/gpupack/internal/cli"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/mock/job"
	"github.com/gpupack/gpupack/nvml"
)

// Version is set at build time.
var Version = "dev"

func main() {
	err := newCommand().Execute()
	klog.Flush() // the JSON format buffers; nothing logged is lost at exit
	if err != nil {
		os.Exit(1)
	}
}

// flags are the command's settings.
type flags struct {
	node, kubeconfig, dir, nvmlSpec, nvmlLibrary, mockState string
	unit, procRoot, podResources                            string
	metricsPort                                             int
	evictAfter, usageInterval, reconcileInterval, quiet     time.Duration
	ignoredXids                                             []uint
	cgpuDisabled                                            bool
}

func newCommand() *cobra.Command {
	f := &flags{}
	cmd := &cobra.Command{
		Use:   "gpupack-device-plugin",
		Short: "kubelet device plugin that shares GPUs by memory (aliyun.com/gpu-mem)",
		Long: `gpupack-device-plugin advertises each card's memory to the kubelet as
aliyun.com/gpu-mem (one fake device per memory unit), gives each container the
cards and share the extender chose, watches card health (Xid, ECC, lost cards)
and each container's real GPU memory use against its share, and serves
Prometheus metrics.

--nvml chooses the cards: "real" loads the NVIDIA driver's libnvidia-ml.so.1;
"mock:<preset>" (presets: ` + strings.Join(mock.PresetNames(), ", ") + `) or
"mock:<file>" (a YAML node config: preset, or cards: [A100-80GB, T4, ...])
simulates the cards, keeping their state in --mock-state so simulated jobs
(gpupack-train) can share it. A state file of the same node and cards is kept
across restarts (with its jobs' processes and faults). Every container
allocated simulated cards gets the state's folder mounted at the same path
and GPUPACK_MOCK_STATE naming the file, as real cards come with their device
nodes: on a Kubernetes node, --mock-state must lie in a folder of its own on
a hostPath mounted at the same path in the plugin's container.`,
		SilenceUsage: true,
		Version:      Version,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx = klog.NewContext(ctx, klog.Background().WithName("gpupack-device-plugin"))
			return run(ctx, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty uses the in-cluster config")
	fl.StringVar(&f.dir, "device-plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugins folder")
	fl.StringVar(&f.nvmlSpec, "nvml", "real", `the cards: "real", "mock:<preset>" or "mock:<config file>"`)
	fl.StringVar(&f.nvmlLibrary, "nvml-library", "", "path of libnvidia-ml.so.1 for --nvml=real (default: the loader's search path)")
	fl.StringVar(&f.mockState, "mock-state", "", "state file of the simulated cards; its folder is mounted into every container given simulated cards, so on a node it must be a hostPath mounted at the same path here (default <tmp>/gpupack-mock-<node>/nvml.json)")
	fl.StringVar(&f.unit, "memory-unit", "GiB", "unit of aliyun.com/gpu-mem: GiB or MiB (the extender's must match)")
	fl.StringVar(&f.procRoot, "proc-root", "/proc", "the host's /proc, to map GPU processes to pods")
	fl.StringVar(&f.podResources, "pod-resources-socket", deviceplugin.DefaultPodResourcesSocket, `the kubelet's PodResources API socket, which says what containers hold ("": what the plugin remembers serving, and no reconciliation)`)
	fl.IntVar(&f.metricsPort, "metrics-port", 9445, "port of /metrics, /healthz and /readyz (0: not served)")
	fl.DurationVar(&f.evictAfter, "evict-over-share-after", 0, "evict a pod whose container holds more than its GPU memory share for this long (0: only report)")
	fl.DurationVar(&f.usageInterval, "usage-interval", 5*time.Second, "how often GPU memory use is checked against shares")
	fl.DurationVar(&f.reconcileInterval, "reconcile-interval", 30*time.Second, "how often annotations are reconciled with the PodResources API")
	fl.DurationVar(&f.quiet, "health-recovery", 5*time.Minute, "how long a card made unhealthy by an Xid or ECC error must stay quiet to be healthy again")
	fl.UintSliceVar(&f.ignoredXids, "ignored-xids", defaultIgnoredXids(), "Xids that are the application's fault, not the card's")
	fl.BoolVar(&f.cgpuDisabled, "cgpu-disable", false, "set CGPU_DISABLE=true in every container (also when the node is labelled "+contract.LabelCGPUDisable+"=true)")
	logging := cli.AddLoggingFlags(fl)
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error { return logging.Apply() }
	return cmd
}

// validate refuses flag values the plugin cannot run with, every one
// named, before anything starts (a non-positive interval used to panic a
// ticker).
func (f *flags) validate() error {
	var errs []error
	if f.node == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required"))
	}
	if _, err := contract.ParseUnit(f.unit); err != nil {
		errs = append(errs, fmt.Errorf("--memory-unit: %w", err))
	}
	for _, d := range []struct {
		name     string
		v        time.Duration
		zeroMean string // "": 0 is refused too
	}{
		{"usage-interval", f.usageInterval, ""},
		{"reconcile-interval", f.reconcileInterval, ""},
		{"evict-over-share-after", f.evictAfter, "only report"},
		// nvml takes a Quiet of 0 for its default, not for "at once"
		{"health-recovery", f.quiet, ""},
	} {
		switch {
		case d.zeroMean == "" && d.v <= 0:
			errs = append(errs, fmt.Errorf("--%s=%v: want a positive duration, e.g. 5s", d.name, d.v))
		case d.v < 0:
			errs = append(errs, fmt.Errorf("--%s=%v: want 0 (%s) or a positive duration", d.name, d.v, d.zeroMean))
		}
	}
	if f.metricsPort < 0 || f.metricsPort > 65535 {
		errs = append(errs, fmt.Errorf("--metrics-port=%d: want 1..65535, or 0 for none", f.metricsPort))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, f *flags) error {
	if err := f.validate(); err != nil {
		return err
	}
	unit, err := contract.ParseUnit(f.unit)
	if err != nil {
		return err
	}
	cards, err := openNVML(ctx, f)
	if err != nil {
		return err
	}
	defer cards.lib.Shutdown()
	rc, err := cli.RestConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	rc.UserAgent = "gpupack-device-plugin/" + Version
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("building the API client: %w", err)
	}
	cfg := deviceplugin.DaemonConfig{
		Options: deviceplugin.Options{
			NodeName: f.node, Dir: f.dir, Unit: unit, CGPUDisabled: f.cgpuDisabled,
			Health:   nvml.HealthOptions{IgnoredXids: xids(f.ignoredXids), Quiet: f.quiet},
			ProcRoot: f.procRoot, EvictOverShareAfter: f.evictAfter, PodResourcesSocket: f.podResources,
			Mounts: cards.mounts, Env: cards.env,
		},
		UsageInterval:     f.usageInterval,
		ReconcileInterval: f.reconcileInterval,
	}
	if f.metricsPort != 0 {
		cfg.MetricsAddr = fmt.Sprintf(":%d", f.metricsPort)
	}
	return deviceplugin.RunDaemon(ctx, cfg, cards.lib, client)
}

// cards are the node's cards as --nvml chose them, and what each container
// given some needs besides its environment (nothing for real cards: the
// NVIDIA runtime brings their device nodes).
type cards struct {
	lib    nvml.Interface
	mounts []*pluginapi.Mount
	env    map[string]string
}

// openNVML opens the real library or a simulated node. The simulated
// node's state is kept when it describes the same node and cards (a
// restarted plugin finds its jobs and faults), and travels with every
// allocation: the state's folder (not the file, which is replaced by
// rename) mounted at the same path, read-write, and GPUPACK_MOCK_STATE.
func openNVML(ctx context.Context, f *flags) (cards, error) {
	if f.nvmlSpec == "real" {
		lib, err := nvml.NewReal(f.nvmlLibrary)
		return cards{lib: lib}, err
	}
	spec, ok := strings.CutPrefix(f.nvmlSpec, "mock:")
	if !ok || spec == "" {
		return cards{}, fmt.Errorf(`--nvml %q: want "real", "mock:<preset>" or "mock:<file>"`, f.nvmlSpec)
	}
	path := f.mockState
	if path == "" {
		path = filepath.Join(os.TempDir(), "gpupack-mock-"+f.node, "nvml.json")
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return cards{}, fmt.Errorf("--mock-state: %w", err)
	}
	dir := filepath.Dir(path)
	if dir == "/" {
		return cards{}, fmt.Errorf("--mock-state %s: its folder is mounted into every container given simulated cards: give the state a folder of its own", path)
	}
	want, err := mock.StateFromSpec(spec, f.node)
	if err != nil {
		return cards{}, err
	}
	st, kept, err := mock.OpenOrCreate(path, want)
	if err != nil {
		return cards{}, err
	}
	log := klog.FromContext(ctx)
	log.Info("Simulated cards", "spec", spec, "state", path, "kept", kept, "cards", len(want.Cards))
	lib, err := nvml.New(mock.New(st, mock.WithProcRoot(f.procRoot), mock.WithLogger(log)))
	if err != nil {
		return cards{}, err
	}
	return cards{
		lib:    lib,
		mounts: []*pluginapi.Mount{{ContainerPath: dir, HostPath: dir}},
		env:    map[string]string{job.EnvMockState: path},
	}, nil
}

func defaultIgnoredXids() []uint {
	out := make([]uint, len(nvml.DefaultIgnoredXids))
	for i, x := range nvml.DefaultIgnoredXids {
		out[i] = uint(x)
	}
	return out
}

// xids converts the flag; an empty list stays empty (ignore none), not nil
// (the default list).
func xids(in []uint) []uint64 {
	out := make([]uint64, len(in))
	for i, x := range in {
		out[i] = uint64(x)
	}
	return out
}
