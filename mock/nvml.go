package mock

import (
	"fmt"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	nvmlmock "github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"k8s.io/klog/v2"
)

// The driver the simulated NVML reports, a release of the R550 branch.
const (
	// DriverVersion is what SystemGetDriverVersion returns.
	DriverVersion = "550.54.15"
	// CUDADriverVersion is what SystemGetCudaDriverVersion returns: CUDA
	// 12.4, encoded as NVML does (1000*major + 10*minor).
	CUDADriverVersion = 12040
)

// Option configures the simulated NVML.
type Option func(*options)

type options struct {
	procRoot string
	log      klog.Logger
}

// WithProcRoot says where the host's /proc is seen: the device plugin's
// --proc-root ("/proc" without this option). Processes are reported under
// the host PIDs found there, as the real NVML reports them.
func WithProcRoot(dir string) Option {
	return func(o *options) {
		if dir != "" {
			o.procRoot = dir
		}
	}
}

// WithLogger sets the logger of the process look-ups (klog.Background()
// without this option).
func WithLogger(log klog.Logger) Option {
	return func(o *options) { o.log = log }
}

// New returns a simulated NVML over the node in store. Every call reads the
// shared state, so faults and processes appear as soon as anyone writes them.
func New(st *Store, opts ...Option) nvml.Interface {
	_, iface := newLib(st, opts...)
	return iface
}

func newLib(st *Store, opts ...Option) (*lib, nvml.Interface) {
	o := options{procRoot: "/proc", log: klog.Background()}
	for _, opt := range opts {
		opt(&o)
	}
	m := &lib{st: st, pids: newHostPIDs(o.procRoot, o.log.WithName("mock-nvml"))}
	iface := &nvmlmock.Interface{
		InitFunc:     func() nvml.Return { return m.init() },
		ShutdownFunc: func() nvml.Return { return nvml.SUCCESS },
		ErrorStringFunc: func(r nvml.Return) string {
			return r.String()
		},
		DeviceGetCountFunc: func() (int, nvml.Return) {
			s, ret := m.read()
			if ret != nvml.SUCCESS {
				return 0, ret
			}
			return len(s.Cards), nvml.SUCCESS
		},
		DeviceGetHandleByIndexFunc:     func(i int) (nvml.Device, nvml.Return) { return m.device(i) },
		SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return DriverVersion, nvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return CUDADriverVersion, nvml.SUCCESS },
		EventSetCreateFunc:             func() (nvml.EventSet, nvml.Return) { return m.eventSet(), nvml.SUCCESS },
	}
	return m, iface
}

type lib struct {
	st *Store
	// pids finds the host PIDs of the recorded processes.
	pids *hostPIDs
	mu   sync.Mutex
	// devices are made once per index, so that handles compare equal.
	devices map[int]*nvmlmock.Device
	// registered maps event sets to the cards they watch.
	registered map[*nvmlmock.EventSet]map[int]uint64
}

func (m *lib) init() nvml.Return {
	if _, ret := m.read(); ret != nvml.SUCCESS {
		return nvml.ERROR_LIBRARY_NOT_FOUND
	}
	return nvml.SUCCESS
}

// read loads the state as recorded.
func (m *lib) read() (*State, nvml.Return) {
	s, err := m.st.Read()
	if err != nil {
		return nil, nvml.ERROR_UNKNOWN
	}
	return s, nvml.SUCCESS
}

// card reads card i, its processes as NVML reports them, or the return
// code NVML gives for it.
func (m *lib) card(i int) (*State, *CardState, nvml.Return) {
	s, ret := m.read()
	if ret != nvml.SUCCESS {
		return nil, nil, ret
	}
	if i < 0 || i >= len(s.Cards) {
		return nil, nil, nvml.ERROR_INVALID_ARGUMENT
	}
	c := &s.Cards[i]
	if c.Lost {
		return nil, nil, nvml.ERROR_GPU_IS_LOST
	}
	// NVML shows the processes that run, under their host PIDs.
	c.Processes = m.pids.report(c.Processes)
	return s, c, nvml.SUCCESS
}

func (m *lib) device(i int) (nvml.Device, nvml.Return) {
	if _, _, ret := m.card(i); ret != nvml.SUCCESS && ret != nvml.ERROR_GPU_IS_LOST {
		return nil, ret
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.devices[i]; ok {
		return d, nvml.SUCCESS
	}
	d := m.newDevice(i)
	if m.devices == nil {
		m.devices = map[int]*nvmlmock.Device{}
	}
	m.devices[i] = d
	return d, nvml.SUCCESS
}

func (m *lib) newDevice(i int) *nvmlmock.Device {
	d := &nvmlmock.Device{}
	d.GetIndexFunc = func() (int, nvml.Return) { return i, nvml.SUCCESS }
	d.GetUUIDFunc = func() (string, nvml.Return) {
		// The UUID stays readable on a lost card, as NVML caches it.
		s, ret := m.read()
		if ret != nvml.SUCCESS || i >= len(s.Cards) {
			return "", nvml.ERROR_UNKNOWN
		}
		return s.Cards[i].UUID, nvml.SUCCESS
	}
	d.GetNameFunc = func() (string, nvml.Return) {
		_, c, ret := m.card(i)
		if ret != nvml.SUCCESS {
			return "", ret
		}
		return c.Model, nvml.SUCCESS
	}
	d.GetMinorNumberFunc = func() (int, nvml.Return) { return i, nvml.SUCCESS }
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		if _, _, ret := m.card(i); ret != nvml.SUCCESS {
			return nvml.PciInfo{}, ret
		}
		return pciInfo(i), nvml.SUCCESS
	}
	d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		_, c, ret := m.card(i)
		if ret != nvml.SUCCESS {
			return nvml.Memory{}, ret
		}
		total, used := uint64(c.MemoryMiB)<<20, uint64(usedMiB(c))<<20
		return nvml.Memory{Total: total, Used: used, Free: total - min(used, total)}, nvml.SUCCESS
	}
	d.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
		_, c, ret := m.card(i)
		if ret != nvml.SUCCESS {
			return nvml.Memory_v2{}, ret
		}
		total, used := uint64(c.MemoryMiB)<<20, uint64(usedMiB(c))<<20
		return nvml.Memory_v2{Version: nvml.STRUCT_VERSION(nvml.Memory_v2{}, 2), Total: total, Used: used, Free: total - min(used, total)}, nvml.SUCCESS
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		_, c, ret := m.card(i)
		if ret != nvml.SUCCESS {
			return nvml.Utilization{}, ret
		}
		sm := smBusy(c)
		return nvml.Utilization{Gpu: uint32(sm), Memory: uint32(sm * 6 / 10)}, nvml.SUCCESS
	}
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
		_, c, ret := m.card(i)
		if ret != nvml.SUCCESS {
			return 0, ret
		}
		return uint32(32 + smBusy(c)*45/100), nvml.SUCCESS
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) {
		_, c, ret := m.card(i)
		if ret != nvml.SUCCESS {
			return 0, ret
		}
		return uint32((c.IdleW + (c.MaxW-c.IdleW)*smBusy(c)/100) * 1000), nvml.SUCCESS
	}
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		_, c, ret := m.card(i)
		if ret != nvml.SUCCESS {
			return nil, ret
		}
		out := make([]nvml.ProcessInfo, len(c.Processes))
		for k, p := range c.Processes {
			out[k] = nvml.ProcessInfo{Pid: uint32(p.PID), UsedGpuMemory: uint64(p.UsedMiB) << 20}
		}
		return out, nvml.SUCCESS
	}
	d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
		return nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError, nvml.SUCCESS
	}
	d.RegisterEventsFunc = func(mask uint64, es nvml.EventSet) nvml.Return {
		set, ok := es.(*nvmlmock.EventSet)
		if !ok {
			return nvml.ERROR_INVALID_ARGUMENT
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.registered[set] == nil {
			return nvml.ERROR_INVALID_ARGUMENT
		}
		m.registered[set][i] = mask
		return nvml.SUCCESS
	}
	return d
}

// pciBuses are the PCI buses of the eight cards of an HGX/DGX A100 board,
// in NVML's index order; cards after the eighth continue past them.
var pciBuses = []uint32{0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD}

// pciInfo is card i's PCI address, as the driver gives it for a card in
// PCI domain 0, device 0, function 0.
func pciInfo(i int) nvml.PciInfo {
	bus := uint32(0xC0 + i)
	if i < len(pciBuses) {
		bus = pciBuses[i]
	}
	p := nvml.PciInfo{Bus: bus}
	copy(p.BusId[:], cChars(fmt.Sprintf("%08X:%02X:00.0", 0, bus)))
	copy(p.BusIdLegacy[:], cChars(fmt.Sprintf("%04X:%02X:00.0", 0, bus)))
	return p
}

// cChars is s as C chars (the arrays are zeroed, so it ends in NUL).
func cChars(s string) []int8 {
	out := make([]int8, len(s))
	for i := range len(s) {
		out[i] = int8(s[i])
	}
	return out
}

func usedMiB(c *CardState) int64 {
	var u int64
	for _, p := range c.Processes {
		u += p.UsedMiB
	}
	return u
}

func smBusy(c *CardState) int {
	sm := 0
	for _, p := range c.Processes {
		sm += p.SM
	}
	return min(sm, 100)
}

// eventSet delivers the faults written to the state after its creation.
func (m *lib) eventSet() nvml.EventSet {
	set := &nvmlmock.EventSet{}
	var seen uint64
	if s, ret := m.read(); ret == nvml.SUCCESS {
		seen = s.Seq
	}
	m.mu.Lock()
	if m.registered == nil {
		m.registered = map[*nvmlmock.EventSet]map[int]uint64{}
	}
	m.registered[set] = map[int]uint64{}
	m.mu.Unlock()
	set.FreeFunc = func() nvml.Return {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.registered, set)
		return nvml.SUCCESS
	}
	set.WaitFunc = func(timeoutMs uint32) (nvml.EventData, nvml.Return) {
		deadline := time.Now().Add(time.Duration(timeoutMs) * time.Millisecond)
		for {
			s, ret := m.read()
			if ret != nvml.SUCCESS {
				return nvml.EventData{}, ret
			}
			for _, e := range s.Events {
				if e.Seq <= seen {
					continue
				}
				seen = e.Seq
				m.mu.Lock()
				mask, watched := m.registered[set][e.Card]
				m.mu.Unlock()
				typ := uint64(nvml.EventTypeXidCriticalError)
				if e.DoubleBitECC {
					typ = nvml.EventTypeDoubleBitEccError
				}
				if !watched || mask&typ == 0 {
					continue
				}
				dev, _ := m.device(e.Card)
				return nvml.EventData{Device: dev, EventType: typ, EventData: e.Xid}, nvml.SUCCESS
			}
			if !time.Now().Before(deadline) {
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
			time.Sleep(min(20*time.Millisecond, time.Until(deadline)))
		}
	}
	return set
}
