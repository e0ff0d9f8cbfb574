//go:build tools

// Package helm pins the helm the tests and make verify use to lint and
// render deploy/chart; a module of its own, so its dependencies (a newer
// Kubernetes minor) do not move the product's or the test module's.
package helm

import _ "helm.sh/helm/v3/cmd/helm"
