// Package layout keeps the house's shape: its test holds the import rules
// that each package's doc.go states, in one table, and checks them against
// what `go list` says every package of the module imports, so a change
// that breaks a rule fails `make unit` and `make verify` rather than
// waiting for a reviewer.
//
// It has no code outside its test; a new package must add its rule there.
package layout
