// Package devicemanager drives gpupack's device plugin with the kubelet's
// own device-manager code (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager),
// kept in this separate module so that k8s.io/kubernetes stays out of the
// product's go.mod.
package devicemanager
