package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin"
	"github.com/gpupack/gpupack/deviceplugin/config"
	"github.com/gpupack/gpupack/internal/cli"
	"github.com/gpupack/gpupack/internal/version"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/mock/job"
	"github.com/gpupack/gpupack/nvml"
)

func main() {
	err := newCommand().Execute()
	klog.Flush() // the JSON format buffers; nothing logged is lost at exit
	if err != nil {
		os.Exit(1)
	}
}

// flags are the command's settings. Those with a field in the
// configuration file (settings) override the file only when set on the
// command line; their defaults are the file's.
type flags struct {
	node, kubeconfig                                    string
	configFile, configDir, configLabel, configDefault   string
	configPoll                                          time.Duration
	dir, nvmlSpec, nvmlLibrary, mockState               string
	unit, procRoot, podResources                        string
	metricsPort                                         int
	evictAfter, usageInterval, reconcileInterval, quiet time.Duration
	ignoredXids                                         []uint
	cgpuDisabled                                        bool
}

func newCommand() *cobra.Command {
	cmd, _ := newCommandFlags()
	return cmd
}

// newCommandFlags is the command and the flags it parses into.
func newCommandFlags() (*cobra.Command, *flags) {
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
a hostPath mounted at the same path in the plugin's container.

The settings can come from a versioned configuration file (version: v1, the
flags' names in lowerCamelCase): --config-file for every node, or
--config-dir, a folder of named configurations (<name>.yaml, e.g. a mounted
ConfigMap) of which the node's label --config-label picks one
(--config-default without the label). A flag set on the command line
overrides the file; the file overrides the defaults. When the label or the
selected file changes, the plugin exits (status 0) so that its DaemonSet
restarts it with the new configuration; a change that names no configuration
or an invalid one is refused (logged, and a Warning event on the Node) and
the plugin keeps running.`,
		SilenceUsage: true,
		Version:      version.Get(),
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx = klog.NewContext(ctx, klog.Background().WithName("gpupack-device-plugin"))
			return run(ctx, cmd.Flags(), f)
		},
	}
	def := config.Default()
	fl := cmd.Flags()
	fl.StringVar(&f.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty uses the in-cluster config")
	fl.StringVar(&f.configFile, "config-file", "", "a configuration file (version: v1) for this node; flags set on the command line override it")
	fl.StringVar(&f.configDir, "config-dir", "", "a folder of named configuration files, <name>.yaml, of which the node's --config-label picks one (not with --config-file)")
	fl.StringVar(&f.configLabel, "config-label", contract.LabelDevicePluginConfig, "the node label that names the node's configuration in --config-dir")
	fl.StringVar(&f.configDefault, "config-default", "default", "the configuration in --config-dir of a node without --config-label")
	fl.DurationVar(&f.configPoll, "config-poll-interval", 30*time.Second, "how often the node's label and the configuration file are read for a change (the plugin then exits to restart with it)")
	fl.StringVar(&f.dir, "device-plugin-dir", def.DevicePluginDir, "the kubelet's device-plugins folder")
	fl.StringVar(&f.nvmlSpec, "nvml", def.NVML, `the cards: "real", "mock:<preset>" or "mock:<config file>"`)
	fl.StringVar(&f.nvmlLibrary, "nvml-library", def.NVMLLibrary, "path of libnvidia-ml.so.1 for --nvml=real (default: the loader's search path)")
	fl.StringVar(&f.mockState, "mock-state", def.MockState, "state file of the simulated cards; its folder is mounted into every container given simulated cards, so on a node it must be a hostPath mounted at the same path here (default <tmp>/gpupack-mock-<node>/nvml.json)")
	fl.StringVar(&f.unit, "memory-unit", def.MemoryUnit, "unit of aliyun.com/gpu-mem: GiB or MiB (the extender's must match)")
	fl.StringVar(&f.procRoot, "proc-root", def.ProcRoot, "the host's /proc, to map GPU processes to pods")
	fl.StringVar(&f.podResources, "pod-resources-socket", *def.PodResourcesSocket, `the kubelet's PodResources API socket, which says what containers hold ("": what the plugin remembers serving, and no reconciliation)`)
	fl.IntVar(&f.metricsPort, "metrics-port", *def.MetricsPort, "port of /metrics, /healthz and /readyz (0: not served)")
	fl.DurationVar(&f.evictAfter, "evict-over-share-after", def.EvictOverShareAfter.Duration, "evict a pod whose container holds more than its GPU memory share for this long (0: only report)")
	fl.DurationVar(&f.usageInterval, "usage-interval", def.UsageInterval.Duration, "how often GPU memory use is checked against shares")
	fl.DurationVar(&f.reconcileInterval, "reconcile-interval", def.ReconcileInterval.Duration, "how often annotations are reconciled with the PodResources API")
	fl.DurationVar(&f.quiet, "health-recovery", def.HealthRecovery.Duration, "how long a card made unhealthy by an Xid or ECC error must stay quiet to be healthy again")
	fl.UintSliceVar(&f.ignoredXids, "ignored-xids", uints(def.IgnoredXids), "Xids that are the application's fault, not the card's")
	fl.BoolVar(&f.cgpuDisabled, "cgpu-disable", def.CGPUDisable, "set CGPU_DISABLE=true in every container (also when the node is labelled "+contract.LabelCGPUDisable+"=true)")
	logging := cli.AddLoggingFlags(fl)
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error { return logging.Apply() }
	return cmd, f
}

func run(ctx context.Context, fs *pflag.FlagSet, f *flags) error {
	log := klog.FromContext(ctx)
	client := lazyClient(f.kubeconfig)
	src := f.source()
	sel, cfg, err := f.resolve(ctx, fs, src, client)
	if err != nil {
		return err
	}
	logConfig(log, fs, f, sel, cfg)
	unit, err := contract.ParseUnit(cfg.MemoryUnit)
	if err != nil {
		return err
	}
	cards, err := openNVML(ctx, f.node, cfg)
	if err != nil {
		return err
	}
	defer cards.lib.Shutdown()
	cs, err := client()
	if err != nil {
		return err
	}
	daemon := deviceplugin.DaemonConfig{
		Options: deviceplugin.Options{
			NodeName: f.node, Dir: cfg.DevicePluginDir, Unit: unit, CGPUDisabled: cfg.CGPUDisable,
			Health:   nvml.HealthOptions{IgnoredXids: slices.Clone(cfg.IgnoredXids), Quiet: cfg.HealthRecovery.Duration},
			ProcRoot: cfg.ProcRoot, EvictOverShareAfter: cfg.EvictOverShareAfter.Duration, PodResourcesSocket: *cfg.PodResourcesSocket,
			Mounts: cards.mounts, Env: cards.env,
		},
		UsageInterval:     cfg.UsageInterval.Duration,
		ReconcileInterval: cfg.ReconcileInterval.Duration,
	}
	if *cfg.MetricsPort != 0 {
		daemon.MetricsAddr = fmt.Sprintf(":%d", *cfg.MetricsPort)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if sel != nil {
		wg.Go(func() { f.watchConfig(ctx, fs, src, sel, cs, cancel) })
	}
	err = deviceplugin.RunDaemon(ctx, daemon, cards.lib, cs)
	if errors.Is(context.Cause(ctx), errConfigChanged) {
		return nil // logged by watchConfig; the DaemonSet restarts the container
	}
	return err
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
func openNVML(ctx context.Context, node string, c *config.Config) (cards, error) {
	if c.NVML == "real" {
		lib, err := nvml.NewReal(c.NVMLLibrary)
		return cards{lib: lib}, err
	}
	spec, ok := strings.CutPrefix(c.NVML, "mock:")
	if !ok || spec == "" {
		return cards{}, fmt.Errorf(`nvml %q: want "real", "mock:<preset>" or "mock:<file>"`, c.NVML)
	}
	path := c.MockState
	if path == "" {
		path = filepath.Join(os.TempDir(), "gpupack-mock-"+node, "nvml.json")
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return cards{}, fmt.Errorf("--mock-state: %w", err)
	}
	dir := filepath.Dir(path)
	if dir == "/" {
		return cards{}, fmt.Errorf("--mock-state %s: its folder is mounted into every container given simulated cards: give the state a folder of its own", path)
	}
	want, err := mock.StateFromSpec(spec, node)
	if err != nil {
		return cards{}, err
	}
	st, kept, err := mock.OpenOrCreate(path, want)
	if err != nil {
		return cards{}, err
	}
	log := klog.FromContext(ctx)
	log.Info("Simulated cards", "spec", spec, "state", path, "kept", kept, "cards", len(want.Cards))
	lib, err := nvml.New(mock.New(st, mock.WithProcRoot(c.ProcRoot), mock.WithLogger(log)))
	if err != nil {
		return cards{}, err
	}
	return cards{
		lib:    lib,
		mounts: []*pluginapi.Mount{{ContainerPath: dir, HostPath: dir}},
		env:    map[string]string{job.EnvMockState: path},
	}, nil
}

// uints converts Xids for the flag.
func uints(in []uint64) []uint {
	out := make([]uint, len(in))
	for i, x := range in {
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
