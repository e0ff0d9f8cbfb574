package config

import (
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
)

// Defaults.
const (
	DefaultNVML                = "real"
	DefaultProcRoot            = "/proc"
	DefaultPodResourcesSocket  = "/var/lib/kubelet/pod-resources/kubelet.sock"
	DefaultMetricsPort         = 9445
	DefaultUsageInterval       = 5 * time.Second
	DefaultReconcileInterval   = 30 * time.Second
	DefaultHealthRecovery      = 5 * time.Minute
	DefaultEvictOverShareAfter = time.Duration(0)
)

// DefaultDevicePluginDir is the kubelet's device-plugins folder.
var DefaultDevicePluginDir = pluginapi.DevicePluginPath

// DefaultIgnoredXids are application errors: graphics engine exception (13),
// MMU fault (31), reset channel verification (43), preemptive cleanup (45),
// video processor exception (68), context switch timeout (109); the same
// list as nvml.DefaultIgnoredXids.
var DefaultIgnoredXids = []uint64{13, 31, 43, 45, 68, 109}

// Default returns a configuration with every default filled in.
func Default() *Config {
	c := &Config{Version: Version}
	SetDefaults(c)
	return c
}

// SetDefaults fills the unset fields of c. A set zero is kept (and
// Validate refuses it where it means nothing).
func SetDefaults(c *Config) {
	if c.NVML == "" {
		c.NVML = DefaultNVML
	}
	if c.MemoryUnit == "" {
		c.MemoryUnit = string(contract.DefaultUnit)
	}
	if c.DevicePluginDir == "" {
		c.DevicePluginDir = DefaultDevicePluginDir
	}
	if c.ProcRoot == "" {
		c.ProcRoot = DefaultProcRoot
	}
	if c.PodResourcesSocket == nil {
		c.PodResourcesSocket = ptr(DefaultPodResourcesSocket)
	}
	if c.MetricsPort == nil {
		c.MetricsPort = ptr(DefaultMetricsPort)
	}
	for _, d := range []struct {
		f   **metav1.Duration
		def time.Duration
	}{
		{&c.EvictOverShareAfter, DefaultEvictOverShareAfter},
		{&c.UsageInterval, DefaultUsageInterval},
		{&c.ReconcileInterval, DefaultReconcileInterval},
		{&c.HealthRecovery, DefaultHealthRecovery},
	} {
		if *d.f == nil {
			*d.f = &metav1.Duration{Duration: d.def}
		}
	}
	if c.IgnoredXids == nil {
		c.IgnoredXids = slices.Clone(DefaultIgnoredXids)
	}
}

func ptr[T any](v T) *T { return &v }
