//go:build tools

// Package etcd pins the etcd server the local cluster runs; a module of its
// own, so its dependencies do not move Kubernetes'.
package etcd

import _ "go.etcd.io/etcd/server/v3"
