package config

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Version is the configuration file's only version; a file must name it.
const Version = "v1"

// Config is the device plugin's configuration (YAML or JSON file). Every
// setting of the command line but the node's name, the kubeconfig, the
// logging flags and the flags that find the file is here, under the flag's
// name in lowerCamelCase. Pointers tell "not set" (the default) from a
// zero that means something (metricsPort: 0 serves nothing) or that
// validation must refuse (usageInterval: 0s).
type Config struct {
	// Version of the file's format: "v1".
	Version string `json:"version"`
	// NVML chooses the cards: "real" (the driver's libnvidia-ml.so.1),
	// "mock:<preset>" or "mock:<node config file>" (simulated cards).
	NVML string `json:"nvml,omitempty"`
	// NVMLLibrary is the path of libnvidia-ml.so.1 for real cards ("": the
	// loader's search path).
	NVMLLibrary string `json:"nvmlLibrary,omitempty"`
	// MockState is the state file of simulated cards ("": <tmp>/gpupack-
	// mock-<node>/nvml.json).
	MockState string `json:"mockState,omitempty"`
	// MemoryUnit of aliyun.com/gpu-mem: GiB or MiB (the extender's must
	// match).
	MemoryUnit string `json:"memoryUnit,omitempty"`
	// DevicePluginDir is the kubelet's device-plugins folder.
	DevicePluginDir string `json:"devicePluginDir,omitempty"`
	// ProcRoot is the host's /proc, to map GPU processes to pods.
	ProcRoot string `json:"procRoot,omitempty"`
	// PodResourcesSocket is the kubelet's PodResources API socket ("": no
	// reconciliation; containers hold what the plugin remembers serving).
	PodResourcesSocket *string `json:"podResourcesSocket,omitempty"`
	// MetricsPort serves /metrics, /healthz and /readyz (0: not served).
	MetricsPort *int `json:"metricsPort,omitempty"`
	// EvictOverShareAfter evicts a pod whose container holds more than its
	// GPU memory share for this long (0s: only report).
	EvictOverShareAfter *metav1.Duration `json:"evictOverShareAfter,omitempty"`
	// UsageInterval is how often GPU memory use is checked against shares.
	UsageInterval *metav1.Duration `json:"usageInterval,omitempty"`
	// ReconcileInterval is how often annotations are reconciled with the
	// PodResources API.
	ReconcileInterval *metav1.Duration `json:"reconcileInterval,omitempty"`
	// HealthRecovery is how long a card made unhealthy by an Xid or ECC
	// error must stay quiet to be healthy again.
	HealthRecovery *metav1.Duration `json:"healthRecovery,omitempty"`
	// IgnoredXids are Xids that are the application's fault, not the
	// card's. Absent: DefaultIgnoredXids; [] ignores none.
	IgnoredXids []uint64 `json:"ignoredXids,omitempty"`
	// CGPUDisable sets CGPU_DISABLE=true in every container (so does the
	// node label cgpu.disable.isolation=true).
	CGPUDisable bool `json:"cgpuDisable,omitempty"`
}
