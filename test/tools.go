//go:build tools

// The control plane of the local cluster is built from these packages, at
// the versions this module pins (see cluster.EnsureBinaries).
package test

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
