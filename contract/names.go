package contract

import corev1 "k8s.io/api/core/v1"

// Resources, as gpushare named them.
const (
	// ResourceGPUMem is the GPU memory a container asks for, in the cluster's
	// memory unit. The device plugin advertises it as one fake device per unit.
	ResourceGPUMem corev1.ResourceName = "aliyun.com/gpu-mem"
	// ResourceGPUCount is the number of cards on a node (patched into node
	// status by the device plugin). A container that asks for it alone wants
	// whole cards; with ResourceGPUMem it spreads that memory over this many
	// cards.
	ResourceGPUCount corev1.ResourceName = "aliyun.com/gpu-count"
)

// Pod annotations that the extender writes when it binds a pod (gpushare).
const (
	AnnotationIndex      = "ALIYUN_COM_GPU_MEM_IDX"
	AnnotationPodMem     = "ALIYUN_COM_GPU_MEM_POD"
	AnnotationDevMem     = "ALIYUN_COM_GPU_MEM_DEV"
	AnnotationAssigned   = "ALIYUN_COM_GPU_MEM_ASSIGNED"
	AnnotationAssumeTime = "ALIYUN_COM_GPU_MEM_ASSUME_TIME"
	// AnnotationAllocation is the per-container, per-card allocation, as JSON
	// (see Allocation). kubectl inspect gpushare reads it.
	AnnotationAllocation = "scheduler.framework.gpushare.allocation"
)

// gpupack's own annotations.
const (
	// AnnotationInventory is set on a Node by the device plugin: the cards of
	// the node as an Inventory JSON document.
	AnnotationInventory = "gpupack.io/gpu-inventory"
	// AnnotationModels is set on a Pod by its owner: the card models it may
	// run on, separated by '|' or ','. Empty or absent means any model.
	AnnotationModels = "gpupack.io/gpu-models"
	// AnnotationNode is written by the extender at bind: the node it chose.
	AnnotationNode = "gpupack.io/node"
	// AnnotationSignature is written by the extender at bind: an HMAC over the
	// pod UID, the node and the allocation, so that only decisions the
	// extender made are trusted when state is rebuilt (see Sign).
	AnnotationSignature = "gpupack.io/signature"
	// AnnotationPlanned is written by the device plugin when it rewrites a
	// pod's allocation to what the kubelet really gave (same-size pods can
	// swap cards): the extender's original decision, kept so that the
	// node's set of decisions stays what it was while the rewrites land one
	// pod at a time. The extender's signature, when kept, covers this plan.
	AnnotationPlanned = "gpupack.io/planned-allocation"
)

// Node labels.
const (
	// LabelGPUShare marks the nodes of the GPU sharing pool.
	LabelGPUShare = "gpushare"
	// LabelCGPUDisable set to "true" turns cGPU isolation off on a node.
	LabelCGPUDisable = "cgpu.disable.isolation"
	// LabelDevicePluginConfig names the device plugin's configuration of
	// a node, among those of the chart's ConfigMap (the plugin's
	// --config-dir); without it the node runs the default one.
	LabelDevicePluginConfig = "gpupack.io/device-plugin.config"
)

// Node labels the device plugin sets from what NVML found, for
// nodeSelectors and node affinity. A label whose value NVML cannot give is
// removed, not left stale.
const (
	// LabelGPUProduct is the node's card model, in the form a pod's
	// AnnotationModels admits: the NVML name without its vendor prefix
	// ("NVIDIA ", "Tesla "), each character a label value cannot hold
	// turned into '-': "NVIDIA A100-SXM4-80GB" is "A100-SXM4-80GB". On a
	// node of several models it is the model of the most cards (a tie goes
	// to the model of the lowest-indexed card), and LabelGPUMixed is set.
	LabelGPUProduct = "gpupack.io/gpu.product"
	// LabelGPUMemory is the memory of the node's smallest card, in MiB:
	// every card of the node has at least this much.
	LabelGPUMemory = "gpupack.io/gpu.memory"
	// LabelGPUCount is the number of cards on the node, healthy or not.
	LabelGPUCount = "gpupack.io/gpu.count"
	// LabelGPUMixed is "true" on a node of more than one card model, and
	// absent otherwise.
	LabelGPUMixed = "gpupack.io/gpu.mixed"
	// LabelDriverVersion is the NVIDIA kernel driver's version, e.g.
	// "550.54.15".
	LabelDriverVersion = "gpupack.io/gpu.driver.version"
	// LabelCUDADriverVersion is the newest CUDA version the driver
	// supports, as major.minor, e.g. "12.4".
	LabelCUDADriverVersion = "gpupack.io/cuda.driver.version"
)

// Container environment returned by the device plugin's Allocate.
const (
	EnvVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	EnvIndex          = "ALIYUN_COM_GPU_MEM_IDX"
	EnvPodMem         = "ALIYUN_COM_GPU_MEM_POD"
	EnvContainerMem   = "ALIYUN_COM_GPU_MEM_CONTAINER"
	EnvDevMem         = "ALIYUN_COM_GPU_MEM_DEV"
	EnvCGPUDisable    = "CGPU_DISABLE"
)
