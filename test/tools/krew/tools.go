//go:build tools

// Package krew pins krew: its manifest validator (validate-krew-manifest),
// which make release runs on the krew plugin manifest it writes and make
// verify on one written for sample archives, and krew itself, which the
// validator runs to install each platform's archive. A module of its own,
// so krew's dependencies do not move the product's or the test module's.
package krew

import (
	_ "sigs.k8s.io/krew/cmd/krew"
	_ "sigs.k8s.io/krew/cmd/validate-krew-manifest"
)
