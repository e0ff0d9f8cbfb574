// Package job is a simulated AI-training job for the mock NVML: it reads the
// environment the device plugin's Allocate gave its container, "runs" on
// the simulated cards named there (holds their memory and keeps their SMs
// busy, in the phases of a training loop) and can be told to exceed its
// share, so soft isolation can be seen at work without a GPU.
//
// A job records itself in the simulated node's state by its identity
// (mock.Identity: PID namespace, PID there, start time), so that jobs in
// containers of their own never collide and the simulated NVML reports
// them under their host PIDs, as the real driver does. It finds the state
// through GPUPACK_MOCK_STATE, which Allocate sets on simulated cards.
//
// It depends on packages mock and contract only; package deviceplugin must
// not depend on it (cmd/gpupack-device-plugin takes EnvMockState from it).
package job
