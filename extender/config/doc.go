// Package config is the extender's configuration file: its types, their
// defaults and their validation, kept apart. It must not depend on a CLI
// library: cmd/gpupack-extender maps flags onto it.
package config
