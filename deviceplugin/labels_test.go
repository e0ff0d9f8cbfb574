package deviceplugin

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/nvml"
)

// noDriverNVML is an NVML that cannot say the driver's versions.
type noDriverNVML struct{ nvml.Interface }

var _ nvml.Interface = (*noDriverNVML)(nil)

func (noDriverNVML) System() (nvml.System, error) { return nvml.System{}, nil }

// publishedLabels publishes a node of the preset over a node that already
// has labels, and returns the node's labels after.
func publishedLabels(t *testing.T, preset string, before map[string]string, wrap func(nvml.Interface) nvml.Interface) map[string]string {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	node := fixture.MakeNode("node-a").Obj()
	node.Labels = before
	kube := fake.NewClientset(node)
	_, lib := mockNVML(t, t.TempDir(), preset)
	if wrap != nil {
		lib = wrap(lib)
	}
	p, err := New(Options{NodeName: "node-a", Dir: t.TempDir(), Unit: contract.GiB}, lib, &pods{}, kube)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.PublishNode(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := kube.CoreV1().Nodes().Get(context.Background(), "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := contract.ParseInventory(got.Annotations[contract.AnnotationInventory]); err != nil {
		t.Errorf("the inventory went with the labels: %v", err)
	}
	return got.Labels
}

func TestPublishNodeLabels(t *testing.T) {
	driver := map[string]string{
		contract.LabelDriverVersion:     mock.DriverVersion,
		contract.LabelCUDADriverVersion: "12.4", // 12040 = 1000*12 + 10*4
	}
	with := func(m map[string]string, more map[string]string) map[string]string {
		out := map[string]string{}
		for _, x := range []map[string]string{m, more} {
			for k, v := range x {
				out[k] = v
			}
		}
		return out
	}
	tests := []struct {
		name   string
		preset string
		before map[string]string
		wrap   func(nvml.Interface) nvml.Interface
		want   map[string]string
	}{{
		name:   "a100x8",
		preset: "a100x8",
		want: with(driver, map[string]string{
			contract.LabelGPUProduct: "A100-SXM4-80GB",
			contract.LabelGPUMemory:  "81920",
			contract.LabelGPUCount:   "8",
		}),
	}, {
		name:   "t4x4",
		preset: "t4x4",
		want: with(driver, map[string]string{
			contract.LabelGPUProduct: "T4",
			contract.LabelGPUMemory:  "15360",
			contract.LabelGPUCount:   "4",
		}),
	}, {
		// 2 x A100 80 GB, 2 x T4: a tie, won by the model of card 0; the
		// memory is the smaller card's.
		name:   "mixed",
		preset: "mixed",
		want: with(driver, map[string]string{
			contract.LabelGPUProduct: "A100-SXM4-80GB",
			contract.LabelGPUMemory:  "15360",
			contract.LabelGPUCount:   "4",
			contract.LabelGPUMixed:   "true",
		}),
	}, {
		name:   "h100x1: spaces become dashes",
		preset: "h100x1",
		want: with(driver, map[string]string{
			contract.LabelGPUProduct: "H100-80GB-HBM3",
			contract.LabelGPUMemory:  "81559",
			contract.LabelGPUCount:   "1",
		}),
	}, {
		// The node was mixed with another driver before; the labels of
		// others are kept.
		name:   "stale labels are replaced or removed",
		preset: "t4x4",
		before: map[string]string{
			contract.LabelGPUProduct:        "A100-SXM4-80GB",
			contract.LabelGPUMixed:          "true",
			contract.LabelGPUCount:          "8",
			contract.LabelDriverVersion:     "535.104.05",
			contract.LabelCUDADriverVersion: "12.2",
			"kubernetes.io/hostname":        "node-a",
			contract.LabelGPUShare:          "true",
		},
		want: with(driver, map[string]string{
			contract.LabelGPUProduct: "T4",
			contract.LabelGPUMemory:  "15360",
			contract.LabelGPUCount:   "4",
			"kubernetes.io/hostname": "node-a",
			contract.LabelGPUShare:   "true",
		}),
	}, {
		name:   "unknown driver versions leave their labels off",
		preset: "t4x4",
		before: map[string]string{contract.LabelDriverVersion: "535.104.05", contract.LabelCUDADriverVersion: "12.2"},
		wrap:   func(l nvml.Interface) nvml.Interface { return noDriverNVML{l} },
		want: map[string]string{
			contract.LabelGPUProduct: "T4",
			contract.LabelGPUMemory:  "15360",
			contract.LabelGPUCount:   "4",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := publishedLabels(t, tt.preset, tt.before, tt.wrap)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestModelLabelValue(t *testing.T) {
	tests := []struct {
		model, want string
	}{
		{"NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"},
		{"Tesla T4", "T4"},
		{"tesla v100-sxm2-16gb", "v100-sxm2-16gb"},
		{"NVIDIA Tesla V100-SXM2-32GB", "V100-SXM2-32GB"},
		{"NVIDIA H100 80GB HBM3", "H100-80GB-HBM3"},
		{"NVIDIA GeForce RTX 4090 (rev. A)", "GeForce-RTX-4090--rev.-A"},
		{"NVIDIA", "NVIDIA"},                    // no model after the prefix: kept
		{"NVIDIA  A40", "A40"},                  // the second space is trimmed
		{"Quadro RTX 8000/", "Quadro-RTX-8000"}, // ends alphanumeric
		{"A100\u00b5", "A100"},                  // non-ASCII bytes, then trimmed
		{"(?)", ""},
		{"", ""},
		{"A" + string(make([]byte, 70)), "A"},
		{"GH200 " + repeatString("x", 70), "GH200-" + repeatString("x", 57)}, // cut at 63
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			if got := ModelLabelValue(tt.model); got != tt.want {
				t.Errorf("ModelLabelValue(%q) = %q, want %q", tt.model, got, tt.want)
			}
		})
	}
}

func repeatString(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

// TestProductLabelAgreesWithModelMatching checks the product label against
// the extender's model matching (contract.ModelAllowed, what a pod's
// gpupack.io/gpu-models annotation goes through), for every card of every
// mock preset and every known model:
//   - a pod whose gpu-models names the label value is allowed on the
//     cards of that model (but for models with spaces: see below) and on
//     no other model's;
//   - a gpu-models name that allows a card also allows the card's label
//     value once mapped the same way (ModelLabelValue), and one that does
//     not allow the card does not allow the label value either.
func TestProductLabelAgreesWithModelMatching(t *testing.T) {
	names := []string{"A100", "a100-sxm4", "A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", "A100-SXM4-40GB",
		"A10", "NVIDIA A10", "H100", "H100 80GB HBM3", "T4", "Tesla T4", "V100", "V100-SXM2-32GB", "P100", "A1"}
	for _, preset := range mock.PresetNames() {
		t.Run(preset, func(t *testing.T) {
			for _, short := range mock.Presets[preset] {
				card := mock.Models[short].Name
				label := ModelLabelValue(card)
				for _, other := range mock.ModelNames() {
					m := mock.Models[other].Name
					if got, want := contract.ModelAllowed([]string{label}, m), m == card; got != want {
						t.Errorf("gpu-models %q (the label of %q) allows %q: %v, want %v", label, card, m, got, want)
					}
				}
				for _, a := range names {
					byModel := contract.ModelAllowed([]string{a}, card)
					byLabel := contract.ModelAllowed([]string{ModelLabelValue(a)}, label)
					if byModel != byLabel {
						t.Errorf("gpu-models %q allows %q: %v, but %q allows its label %q: %v", a, card, byModel, ModelLabelValue(a), label, byLabel)
					}
				}
			}
		})
	}
}
