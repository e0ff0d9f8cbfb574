package deviceplugin

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// TestAllocateAddsMountsAndEnv: what Options add to every allocation
// reaches every container, beside its cards' environment, as simulated
// cards travel with their state.
func TestAllocateAddsMountsAndEnv(t *testing.T) {
	one := bound("one", `{"0":{"1":4}}`, "100", fixture.MakePod().GPUMem(4))
	two := bound("two", `{"0":{"2":2},"1":{"3":3}}`, "101", fixture.MakePod().GPUMem(2).GPUMem(3))
	const dir = "/var/lib/gpupack/mock"
	h := newHarnessWith(t, "a100x8", func(o *Options) {
		o.CGPUDisabled = true // every variable of the plugin's own
		o.Mounts = []*pluginapi.Mount{{ContainerPath: dir, HostPath: dir}}
		o.Env = map[string]string{"GPUPACK_MOCK_STATE": dir + "/nvml.json"}
	}, one, two)

	resp, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: h.ids(2, 2)}, {DevicesIds: h.ids(3, 3)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	resp2, err := h.client.Allocate(h.ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: h.ids(1, 4)}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		r        *pluginapi.ContainerAllocateResponse
		wantIdx  string
		wantCard string
	}{
		{"the first container of a pod of two", resp.ContainerResponses[0], "2", h.uuids[2]},
		{"the second container of a pod of two", resp.ContainerResponses[1], "3", h.uuids[3]},
		{"another pod", resp2.ContainerResponses[0], "1", h.uuids[1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantMounts := []*pluginapi.Mount{{ContainerPath: dir, HostPath: dir}}
			if diff := cmp.Diff(wantMounts, tt.r.Mounts, protocmp.Transform()); diff != "" {
				t.Errorf("mounts (-want +got):\n%s", diff)
			}
			env := tt.r.Envs
			if env["GPUPACK_MOCK_STATE"] != dir+"/nvml.json" || env[contract.EnvIndex] != tt.wantIdx || env[contract.EnvVisibleDevices] != tt.wantCard {
				t.Errorf("env %v: want GPUPACK_MOCK_STATE and the cards' own", env)
			}
			// The names New keeps apart from Options.Env are every name
			// the plugin sets itself.
			for k := range env {
				if k != "GPUPACK_MOCK_STATE" && !slices.Contains(ownEnv, k) {
					t.Errorf("the plugin sets %s, which New does not keep apart from Options.Env", k)
				}
			}
		})
	}
}

func TestNewRefusesBadExtras(t *testing.T) {
	tests := []struct {
		name    string
		mounts  []*pluginapi.Mount
		env     map[string]string
		wantErr string
	}{
		{"a relative container path", []*pluginapi.Mount{{ContainerPath: "state", HostPath: "/state"}}, nil, "want absolute container and host paths"},
		{"no host path", []*pluginapi.Mount{{ContainerPath: "/state"}}, nil, "want absolute container and host paths"},
		{"a nil mount", []*pluginapi.Mount{nil}, nil, "mount 0"},
		{"a variable the plugin sets", nil, map[string]string{"NVIDIA_VISIBLE_DEVICES": "all"}, "sets NVIDIA_VISIBLE_DEVICES, which the plugin sets from the cards"},
		{"a name with '='", nil, map[string]string{"A=B": "c"}, `named "A=B"`},
		{"an empty name", nil, map[string]string{"": "c"}, `named ""`},
		{"fine", []*pluginapi.Mount{{ContainerPath: "/a", HostPath: "/b", ReadOnly: true}}, map[string]string{"GPUPACK_MOCK_STATE": "/b/nvml.json"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, lib := mockNVML(t, t.TempDir(), "t4x4")
			_, err := New(Options{NodeName: "node-a", Dir: t.TempDir(), Unit: contract.GiB, Mounts: tt.mounts, Env: tt.env}, lib, &pods{}, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
