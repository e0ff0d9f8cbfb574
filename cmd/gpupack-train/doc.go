// Command gpupack-train is a simulated AI-training job for nodes that run
// the mock NVML (see package mock/job).
//
// It depends on packages mock and mock/job only: nothing of the device
// plugin, the extender or client-go.
package main
