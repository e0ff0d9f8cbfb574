// Package mock is a simulated NVML: cards of real models and sizes,
// processes whose memory and SM use change over time, Xid and ECC faults, a
// card that falls off the bus, and recovery. It implements go-nvml's
// nvml.Interface (built on go-nvml's own mock types, every call gpupack uses
// filled in), so the device plugin runs the same code on mock and real cards.
//
// The simulated node lives in a State file shared, under a file lock, by the
// device plugin and the simulated training jobs of that node: a job that
// takes memory shows up in the plugin's NVML calls as a real process would.
package mock
