// Package config is the device plugin's versioned configuration file: its
// types, their defaults and their validation, kept apart, and the choice of
// one named file per node (by a node label) from a folder of them, as the
// chart's ConfigMap delivers them. It must not depend on a CLI library or
// on client-go: cmd/gpupack-device-plugin maps flags onto it and reads the
// node's labels.
package config
