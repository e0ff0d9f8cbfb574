//go:build tools

// Package staticcheck pins the staticcheck make verify runs over the product
// and the test module; a module of its own, so its dependencies (x/tools)
// do not move the product's or the test module's.
package staticcheck

import _ "honnef.co/go/tools/cmd/staticcheck"
