package contract_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

func TestPodRequests(t *testing.T) {
	tests := []struct {
		name    string
		pod     *corev1.Pod
		want    []contract.ContainerRequest
		wantErr string
	}{
		{"one share", fixture.MakePod().GPUMem(4).Obj(), []contract.ContainerRequest{{Index: 0, Name: "c0", Mem: 4}}, ""},
		{"a share on each of two cards", fixture.MakePod().Container("8", "2", "").Obj(), []contract.ContainerRequest{{Index: 0, Name: "c0", Mem: 8, Count: 2}}, ""},
		{"whole cards", fixture.MakePod().Container("", "2", "").Obj(), []contract.ContainerRequest{{Index: 0, Name: "c0", Count: 2}}, ""},
		{"two GPU containers and a sidecar", fixture.MakePod().GPUMem(2).Container("", "", "1").GPUMem(3).Obj(),
			[]contract.ContainerRequest{{Index: 0, Name: "c0", Mem: 2}, {Index: 2, Name: "c2", Mem: 3}}, ""},
		{"no GPU", fixture.MakePod().Container("", "", "1").Obj(), nil, contract.ErrNoGPU.Error()},
		{"fractional", fixture.MakePod().Container("1.5", "", "").Obj(), nil, `container "c0" asks for 1500m aliyun.com/gpu-mem: must be a whole number`},
		{"milli", fixture.MakePod().Container("500m", "", "").Obj(), nil, "must be a whole number"},
		{"negative", fixture.MakePod().Container("-2", "", "").Obj(), nil, "must not be negative"},
		{"not divisible", fixture.MakePod().Container("9", "2", "").Obj(), nil, "asks for 9 units of aliyun.com/gpu-mem over 2 cards: not divisible; ask for a multiple of 2"},
		{"too many cards", fixture.MakePod().Container("", "65", "").Obj(), nil, "at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := contract.PodRequests(tt.pod)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("init container", func(t *testing.T) {
		p := fixture.MakePod().GPUMem(1).Obj()
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{contract.ResourceGPUMem: resource.MustParse("1")}}}}
		if _, err := contract.PodRequests(p); err == nil || !strings.Contains(err.Error(), "init container") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("request differs from limit", func(t *testing.T) {
		p := fixture.MakePod().GPUMem(2).Obj()
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{contract.ResourceGPUMem: resource.MustParse("1")}
		if _, err := contract.PodRequests(p); err == nil || !strings.Contains(err.Error(), "differs from limit") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("request only", func(t *testing.T) {
		p := fixture.MakePod().Obj()
		p.Spec.Containers = []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{contract.ResourceGPUMem: resource.MustParse("3")}}}}
		got, err := contract.PodRequests(p)
		if err != nil || got[0].Mem != 3 {
			t.Errorf("got %v, %v", got, err)
		}
	})
	if !errors.Is(contract.ErrNoGPU, contract.ErrNoGPU) {
		t.Fatal("sentinel")
	}
}

func TestModelAllowed(t *testing.T) {
	tests := []struct {
		allowed string
		model   string
		want    bool
	}{
		{"", "anything", true},
		{"A100", "NVIDIA A100-SXM4-80GB", true},
		{"a100-sxm4-80gb", "NVIDIA A100-SXM4-80GB", true},
		{"A10", "NVIDIA A100-SXM4-80GB", false},
		{"A10", "NVIDIA A10", true},
		{"T4", "Tesla T4", true},
		{"V100M16|T4", "T4", true},
		{"V100M16,V100M32", "V100M32", true},
		{"V100M16", "V100M32", false},
		// ' ' and '-' alike: the device plugin's product label value
		// names the model it was made from
		{"H100-80GB-HBM3", "NVIDIA H100 80GB HBM3", true},
		{"H100 80GB", "NVIDIA H100 80GB HBM3", true},
		{"NVIDIA-A100", "NVIDIA A100-SXM4-80GB", true},
		{"H100-80", "NVIDIA H100 80GB HBM3", false},
	}
	for _, tt := range tests {
		if got := contract.ModelAllowed(contract.ParseModels(tt.allowed), tt.model); got != tt.want {
			t.Errorf("ModelAllowed(%q, %q) = %v, want %v", tt.allowed, tt.model, got, tt.want)
		}
	}
}

func TestParseAllocation(t *testing.T) {
	a, err := contract.ParseAllocation(`{"0":{"1":4},"2":{"0":2,"1":2}}`)
	if err != nil {
		t.Fatal(err)
	}
	if a.Total() != 8 || !cmp.Equal(a.Cards(), []int{0, 1}) || a.String() != `{"0":{"1":4},"2":{"0":2,"1":2}}` {
		t.Errorf("got %v total %d cards %v", a, a.Total(), a.Cards())
	}
	for _, bad := range []string{``, `{}`, `[]`, `{"0":{}}`, `{"0":{"1":-4}}`, `{"-1":{"1":4}}`, `{"x":{"1":4}}`, `{"0":{"1":0}}`} {
		if _, err := contract.ParseAllocation(bad); err == nil {
			t.Errorf("ParseAllocation(%q) accepted", bad)
		}
	}
}

func TestParseInventory(t *testing.T) {
	for _, bad := range []string{`{`, `{"cards":[]}`, `{"cards":[{"index":0,"memoryMiB":0}]}`, `{"cards":[{"index":0,"memoryMiB":1},{"index":0,"memoryMiB":1}]}`, `{"cards":[{"index":-1,"memoryMiB":1}]}`} {
		if _, err := contract.ParseInventory(bad); err == nil {
			t.Errorf("ParseInventory(%q) accepted", bad)
		}
	}
	inv, err := contract.ParseInventory(`{"cards":[{"index":0,"uuid":"GPU-1","model":"T4","memoryMiB":15360,"healthy":true}]}`)
	if err != nil || inv.Cards[0].MemoryMiB != 15360 {
		t.Fatalf("%v %v", inv, err)
	}
}

func TestSign(t *testing.T) {
	key := []byte("0123456789abcdef")
	sig := contract.Sign(key, "uid", "node", `{"0":{"1":4}}`)
	if !contract.Verify(key, "uid", "node", `{"0":{"1":4}}`, sig) {
		t.Error("own signature rejected")
	}
	for _, c := range [][4]string{
		{"uid2", "node", `{"0":{"1":4}}`, sig},
		{"uid", "node2", `{"0":{"1":4}}`, sig},
		{"uid", "node", `{"0":{"0":4}}`, sig},
		{"uid", "node", `{"0":{"1":4}}`, "forged"},
	} {
		if contract.Verify(key, c[0], c[1], c[2], c[3]) {
			t.Errorf("Verify accepted %v", c)
		}
	}
	if contract.Verify([]byte("another key 0123"), "uid", "node", `{"0":{"1":4}}`, sig) {
		t.Error("signature verified under another key")
	}
}

func TestUnit(t *testing.T) {
	for in, want := range map[string]contract.Unit{"GiB": contract.GiB, "g": contract.GiB, "MiB": contract.MiB, "m": contract.MiB} {
		if u, err := contract.ParseUnit(in); err != nil || u != want {
			t.Errorf("ParseUnit(%q) = %v, %v", in, u, err)
		}
	}
	if _, err := contract.ParseUnit("TiB"); err == nil {
		t.Error("TiB accepted")
	}
	if contract.GiB.FromMiB(15360) != 15 || contract.MiB.FromMiB(15360) != 15360 || contract.GiB.FromMiB(16383) != 15 {
		t.Error("FromMiB")
	}
}
