//go:build tools

// The local cluster's Kubernetes components are built from these packages,
// at the versions this module pins (see cluster.EnsureBinaries): the control
// plane, and the kubelet and kube-proxy of its real nodes.
package test

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
