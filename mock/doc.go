// Package mock is a simulated NVML: cards of real models and sizes,
// processes whose memory and SM use change over time, Xid and ECC faults, a
// card that falls off the bus, and recovery. It implements go-nvml's
// nvml.Interface (built on go-nvml's own mock types, every call gpupack uses
// filled in), so the device plugin runs the same code on mock and real cards.
//
// The simulated node lives in a State file shared, under a file lock, by the
// device plugin and the simulated training jobs of that node: a job that
// takes memory shows up in the plugin's NVML calls as a real process would.
// The file is replaced by rename on every update, so whoever shares it
// across containers mounts its folder, not the file.
//
// Processes are recorded by their Identity (PID namespace, PID there, start
// time), which a job in a container reads from its own /proc. Like the
// real driver, the simulated NVML reports host PIDs, of running processes
// only: records of its own namespace, when that is the host's, as they
// are; any other found under the host's /proc (WithProcRoot) by the PID
// the process has in its own namespace (NSpid) and its start time.
//
// It must not depend on the device plugin or the extender.
package mock
