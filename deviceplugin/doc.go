// Package deviceplugin is gpupack's kubelet device plugin (v1beta1): it
// advertises each card's memory as aliyun.com/gpu-mem fake devices (one per
// memory unit, ids "<GPU-UUID>-_-<j>"), streams card health, steers the
// kubelet to the card the extender chose, and answers Allocate with the
// container's cards and limits, plus the mounts and environment Options add
// to every container (simulated cards' state). See README.md for the
// Allocate protocol.
//
// It reads cards through package nvml (real or mock) and pods through a
// small PodSource; it must not depend on the extender.
package deviceplugin
