package nvml_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	nvmlmock "github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/google/go-cmp/cmp"

	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/nvml"
)

func newMock(t *testing.T, preset string) (*mock.Store, nvml.Interface) {
	t.Helper()
	s, err := mock.NewState(mock.Config{Node: "node-a", Preset: preset})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mock.Create(filepath.Join(t.TempDir(), "nvml.json"), s)
	if err != nil {
		t.Fatal(err)
	}
	lib, err := nvml.New(mock.New(st))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lib.Shutdown() })
	return st, lib
}

func TestDevicesOfMixedModels(t *testing.T) {
	_, lib := newMock(t, "mixed")
	devs, err := lib.Devices()
	if err != nil {
		t.Fatal(err)
	}
	var got, bus []string
	var mem []int64
	for i, d := range devs {
		if d.Index != i || d.Minor != i || len(d.UUID) != 40 {
			t.Errorf("device %d: %+v", i, d)
		}
		got = append(got, d.Model)
		mem = append(mem, d.MemoryMiB)
		bus = append(bus, d.PCIBusID)
	}
	// NVML's form, a 32-bit domain, as dcgm-exporter's pci_bus_id.
	if diff := cmp.Diff([]string{"00000000:07:00.0", "00000000:0F:00.0", "00000000:47:00.0", "00000000:4E:00.0"}, bus); diff != "" {
		t.Errorf("PCI bus ids (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", "Tesla T4", "Tesla T4"}, got); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{81920, 81920, 15360, 15360}, mem); diff != "" {
		t.Errorf("memory (-want +got):\n%s", diff)
	}
}

func TestSampleSeesProcesses(t *testing.T) {
	st, lib := newMock(t, "t4x4")
	// This test's own PID is alive; PID 1<<30 is not and is dropped.
	if err := st.SetProcess(2, mock.Process{PID: os.Getpid(), UsedMiB: 4096, SM: 60}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetProcess(2, mock.Process{PID: 1 << 30, UsedMiB: 1024, SM: 30}); err != nil {
		t.Fatal(err)
	}
	s, err := lib.Sample(2)
	if err != nil {
		t.Fatal(err)
	}
	// Memory utilisation: 60*6/10 = 36.
	want := nvml.Sample{Memory: nvml.Memory{TotalMiB: 15360, UsedMiB: 4096}, Utilization: nvml.Utilization{GPU: 60, Memory: 36},
		Processes: []nvml.Process{{PID: os.Getpid(), UsedMiB: 4096}}}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("sample (-want +got):\n%s", diff)
	}
	if _, err := lib.Sample(9); err == nil {
		t.Error("sample of a card that does not exist")
	}
}

func TestHealth(t *testing.T) {
	st, lib := newMock(t, "t4x4")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := lib.Health(ctx, nvml.HealthOptions{Poll: 20 * time.Millisecond, Quiet: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	next := func() nvml.HealthEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no health event")
		}
		return nvml.HealthEvent{}
	}
	// An application Xid says nothing of the card; a critical one does.
	if err := st.InjectXid(1, 13); err != nil {
		t.Fatal(err)
	}
	if err := st.InjectXid(1, 79); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (nvml.HealthEvent{Index: 1, Healthy: false, Reason: "Xid 79"}) {
		t.Errorf("got %+v", e)
	}
	if e := next(); e != (nvml.HealthEvent{Index: 1, Healthy: true, Reason: "recovered"}) {
		t.Errorf("after the quiet period: %+v", e)
	}
	if err := st.InjectECC(3); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (nvml.HealthEvent{Index: 3, Healthy: false, Reason: "double-bit ECC error"}) {
		t.Errorf("got %+v", e)
	}
	if e := next(); !e.Healthy || e.Index != 3 {
		t.Errorf("got %+v", e)
	}
	if err := st.Lose(0, true); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (nvml.HealthEvent{Index: 0, Healthy: false, Reason: "lost"}) {
		t.Errorf("got %+v", e)
	}
	if _, err := lib.Sample(0); !errors.Is(err, nvml.ErrGPULost) {
		t.Errorf("sample of a lost card: %v", err)
	}
	if err := st.Lose(0, false); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (nvml.HealthEvent{Index: 0, Healthy: true, Reason: "recovered"}) {
		t.Errorf("got %+v", e)
	}
	cancel()
	for range events { // the channel closes
	}
}

func TestRealLibraryMissing(t *testing.T) {
	_, err := nvml.NewReal(filepath.Join(t.TempDir(), "libnvidia-ml.so.1"))
	if !errors.Is(err, nvml.ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	t.Log(err)
}

func TestSystem(t *testing.T) {
	_, lib := newMock(t, "t4x4")
	got, err := lib.System()
	if err != nil {
		t.Fatal(err)
	}
	// 12040 = 1000*12 + 10*4
	if diff := cmp.Diff(nvml.System{DriverVersion: mock.DriverVersion, CUDADriverVersion: "12.4"}, got); diff != "" {
		t.Errorf("System (-want +got):\n%s", diff)
	}
}

func TestSystemUnsupported(t *testing.T) {
	s, err := mock.NewState(mock.Config{Node: "node-a", Preset: "t4x4"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mock.Create(filepath.Join(t.TempDir(), "nvml.json"), s)
	if err != nil {
		t.Fatal(err)
	}
	raw := mock.New(st).(*nvmlmock.Interface)
	raw.SystemGetDriverVersionFunc = func() (string, gonvml.Return) { return "", gonvml.ERROR_NOT_SUPPORTED }
	raw.SystemGetCudaDriverVersionFunc = func() (int, gonvml.Return) { return 0, gonvml.ERROR_UNKNOWN }
	lib, err := nvml.New(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lib.System()
	if err == nil {
		t.Error("an unknown NVML failure was not returned")
	}
	if got != (nvml.System{}) {
		t.Errorf("System = %+v, want nothing known", got)
	}
}

// TestDevicesPCIBusID: a driver that cannot give PCI info leaves the bus id
// empty; any other failure is an error naming the card.
func TestDevicesPCIBusID(t *testing.T) {
	tests := []struct {
		name    string
		ret     gonvml.Return
		want    string
		wantErr string
	}{
		{name: "read", ret: gonvml.SUCCESS, want: "00000000:07:00.0"},
		{name: "not supported", ret: gonvml.ERROR_NOT_SUPPORTED},
		{name: "failed", ret: gonvml.ERROR_UNKNOWN, wantErr: "device 0 PCI info"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := mock.NewState(mock.Config{Node: "node-a", Preset: "h100x1"})
			if err != nil {
				t.Fatal(err)
			}
			st, err := mock.Create(filepath.Join(t.TempDir(), "nvml.json"), s)
			if err != nil {
				t.Fatal(err)
			}
			iface := mock.New(st).(*nvmlmock.Interface)
			handle := iface.DeviceGetHandleByIndexFunc
			iface.DeviceGetHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
				d, ret := handle(i)
				if md, ok := d.(*nvmlmock.Device); ok && tc.ret != gonvml.SUCCESS {
					md.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) { return gonvml.PciInfo{}, tc.ret }
				}
				return d, ret
			}
			lib, err := nvml.New(iface)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = lib.Shutdown() })
			devs, err := lib.Devices()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v; want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if devs[0].PCIBusID != tc.want {
				t.Errorf("PCI bus id %q, want %q", devs[0].PCIBusID, tc.want)
			}
		})
	}
}
