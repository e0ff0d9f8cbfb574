// Package nvml is gpupack's small interface over NVIDIA's management library:
// the cards (index, UUID, model, minor number, PCI bus id), their memory,
// utilisation, the processes that use them, and health events
// (critical Xid and ECC errors, a card that fell off the bus, recovery).
//
// New takes go-nvml's nvml.Interface, so the real library (NewReal, which
// loads libnvidia-ml at run time through cgo) and the simulated one in
// package mock plug in the same way. Only nvml/, mock/ and deviceplugin/
// may import go-nvml; the extender and the kubectl plugin must not import
// this package.
package nvml
