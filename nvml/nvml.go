package nvml

import (
	"context"
	"errors"
	"fmt"
	"sync"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Device is what does not change about a card while the driver is loaded.
type Device struct {
	Index int
	UUID  string
	Model string
	Minor int
	// PCIBusID is the card's PCI address as NVML writes it, with a
	// 32-bit domain: "00000000:3B:00.0" (dcgm-exporter's pci_bus_id).
	// Empty when the driver cannot say.
	PCIBusID  string
	MemoryMiB int64
}

// Memory is a card's memory, in MiB.
type Memory struct {
	TotalMiB, UsedMiB int64
}

// Utilization is the share of the last sample period in which the card's
// SMs (GPU) and memory controller (Memory) were busy, 0..100.
type Utilization struct {
	GPU, Memory int
}

// Process is one process using a card.
type Process struct {
	PID     int
	UsedMiB int64
}

// Sample is a card's live state.
type Sample struct {
	Memory      Memory
	Utilization Utilization
	Processes   []Process
}

// System is what NVML says of the node's driver. A field NVML cannot give
// (an old driver, a call it does not support) is empty.
type System struct {
	// DriverVersion is the kernel driver's version, e.g. "550.54.15".
	DriverVersion string
	// CUDADriverVersion is the newest CUDA version the driver supports, as
	// major.minor, e.g. "12.4".
	CUDADriverVersion string
}

// Interface is what gpupack needs of NVML. Implementations are safe for
// concurrent use.
type Interface interface {
	// Devices lists the cards, by index.
	Devices() ([]Device, error)
	// Sample reads a card's live state.
	Sample(index int) (Sample, error)
	// System says what NVML knows of the node's driver.
	System() (System, error)
	// Health streams health changes of the cards until ctx ends.
	Health(ctx context.Context, opts HealthOptions) (<-chan HealthEvent, error)
	// Shutdown releases the library.
	Shutdown() error
}

// Errors callers branch on.
var (
	// ErrLibraryNotFound: libnvidia-ml could not be loaded.
	ErrLibraryNotFound = errors.New("NVML library (libnvidia-ml.so.1) not found: install the NVIDIA driver on the node and make the library visible to this container (the NVIDIA container toolkit mounts it)")
	// ErrDriverNotLoaded: the library loaded but the kernel driver is not.
	ErrDriverNotLoaded = errors.New("NVIDIA kernel driver is not loaded on this node")
	// ErrGPULost: the card fell off the bus.
	ErrGPULost = errors.New("GPU is lost (fell off the bus)")
)

// lib implements Interface over any go-nvml nvml.Interface.
type lib struct {
	nvml gonvml.Interface
	mu   sync.Mutex
	devs []gonvml.Device
}

var _ Interface = (*lib)(nil)

// New initialises NVML through l and returns our interface over it.
func New(l gonvml.Interface) (Interface, error) {
	if ret := l.Init(); ret != gonvml.SUCCESS {
		return nil, wrap("initialising NVML", ret)
	}
	return &lib{nvml: l}, nil
}

// NewReal loads the real NVML library (path "" for the default
// libnvidia-ml.so.1) at run time.
func NewReal(path string) (Interface, error) {
	var opts []gonvml.LibraryOption
	if path != "" {
		opts = append(opts, gonvml.WithLibraryPath(path))
	}
	return New(gonvml.New(opts...))
}

// wrap turns an NVML return code into an error, with sentinels for the
// outcomes callers branch on.
func wrap(what string, ret gonvml.Return) error {
	switch ret {
	case gonvml.SUCCESS:
		return nil
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return fmt.Errorf("%s: %w", what, ErrLibraryNotFound)
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("%s: %w", what, ErrDriverNotLoaded)
	case gonvml.ERROR_GPU_IS_LOST:
		return fmt.Errorf("%s: %w", what, ErrGPULost)
	}
	return fmt.Errorf("%s: %w", what, ret)
}

func (l *lib) handles() ([]gonvml.Device, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.devs != nil {
		return l.devs, nil
	}
	n, ret := l.nvml.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, wrap("counting devices", ret)
	}
	devs := make([]gonvml.Device, n)
	for i := range n {
		d, ret := l.nvml.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			return nil, wrap(fmt.Sprintf("device %d", i), ret)
		}
		devs[i] = d
	}
	l.devs = devs
	return devs, nil
}

func (l *lib) handle(index int) (gonvml.Device, error) {
	devs, err := l.handles()
	if err != nil {
		return nil, err
	}
	if index < 0 || index >= len(devs) {
		return nil, fmt.Errorf("no device %d: the node has %d", index, len(devs))
	}
	return devs[index], nil
}

func (l *lib) Devices() ([]Device, error) {
	devs, err := l.handles()
	if err != nil {
		return nil, err
	}
	out := make([]Device, len(devs))
	for i, d := range devs {
		dev := Device{Index: i}
		var ret gonvml.Return
		if dev.UUID, ret = d.GetUUID(); ret != gonvml.SUCCESS {
			return nil, wrap(fmt.Sprintf("device %d UUID", i), ret)
		}
		if dev.Model, ret = d.GetName(); ret != gonvml.SUCCESS {
			return nil, wrap(fmt.Sprintf("device %d name", i), ret)
		}
		if dev.Minor, ret = d.GetMinorNumber(); ret != gonvml.SUCCESS {
			return nil, wrap(fmt.Sprintf("device %d minor number", i), ret)
		}
		pci, ret := d.GetPciInfo()
		switch {
		case ret == gonvml.SUCCESS:
			dev.PCIBusID = cString(pci.BusId[:])
		case !unsupported(ret):
			return nil, wrap(fmt.Sprintf("device %d PCI info", i), ret)
		}
		mem, err := memory(d)
		if err != nil {
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
		dev.MemoryMiB = mem.TotalMiB
		out[i] = dev
	}
	return out, nil
}

// System reads the driver's versions. A version NVML does not support
// asking for is left empty; any other failure is returned, with the
// versions that were read.
func (l *lib) System() (System, error) {
	var s System
	var errs []error
	v, ret := l.nvml.SystemGetDriverVersion()
	switch {
	case ret == gonvml.SUCCESS:
		s.DriverVersion = v
	case !unsupported(ret):
		errs = append(errs, wrap("driver version", ret))
	}
	cuda, ret := l.nvml.SystemGetCudaDriverVersion()
	switch {
	case ret == gonvml.SUCCESS && cuda > 0:
		// NVML encodes 12.4 as 12040: 1000*major + 10*minor.
		s.CUDADriverVersion = fmt.Sprintf("%d.%d", cuda/1000, cuda%1000/10)
	case ret != gonvml.SUCCESS && !unsupported(ret):
		errs = append(errs, wrap("CUDA driver version", ret))
	}
	return s, errors.Join(errs...)
}

// unsupported reports whether ret says that the driver cannot answer.
func unsupported(ret gonvml.Return) bool {
	return ret == gonvml.ERROR_NOT_SUPPORTED || ret == gonvml.ERROR_FUNCTION_NOT_FOUND
}

// cString is the text of a NUL-terminated C char array.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// memory reads memory through the v2 call (which, unlike v1, does not count
// the driver's reservation as used), falling back to v1 on old drivers.
func memory(d gonvml.Device) (Memory, error) {
	if m, ret := d.GetMemoryInfo_v2(); ret == gonvml.SUCCESS {
		return Memory{TotalMiB: int64(m.Total >> 20), UsedMiB: int64(m.Used >> 20)}, nil
	} else if ret != gonvml.ERROR_NOT_SUPPORTED && ret != gonvml.ERROR_FUNCTION_NOT_FOUND {
		return Memory{}, wrap("memory", ret)
	}
	m, ret := d.GetMemoryInfo()
	if ret != gonvml.SUCCESS {
		return Memory{}, wrap("memory", ret)
	}
	return Memory{TotalMiB: int64(m.Total >> 20), UsedMiB: int64(m.Used >> 20)}, nil
}

func (l *lib) Sample(index int) (Sample, error) {
	d, err := l.handle(index)
	if err != nil {
		return Sample{}, err
	}
	var s Sample
	if s.Memory, err = memory(d); err != nil {
		return Sample{}, fmt.Errorf("device %d: %w", index, err)
	}
	u, ret := d.GetUtilizationRates()
	if ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
		return Sample{}, wrap(fmt.Sprintf("device %d utilization", index), ret)
	}
	s.Utilization = Utilization{GPU: int(u.Gpu), Memory: int(u.Memory)}
	procs, ret := d.GetComputeRunningProcesses()
	if ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
		return Sample{}, wrap(fmt.Sprintf("device %d processes", index), ret)
	}
	for _, p := range procs {
		s.Processes = append(s.Processes, Process{PID: int(p.Pid), UsedMiB: int64(p.UsedGpuMemory >> 20)})
	}
	return s, nil
}

func (l *lib) Shutdown() error {
	return wrap("shutting NVML down", l.nvml.Shutdown())
}
