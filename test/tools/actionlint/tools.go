//go:build tools

// Package actionlint pins the actionlint make verify runs over
// .github/workflows; a module of its own, so its dependencies do not move
// the product's or the test module's.
package actionlint

import _ "github.com/rhysd/actionlint/cmd/actionlint"
