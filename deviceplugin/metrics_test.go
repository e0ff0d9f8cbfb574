package deviceplugin

import (
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpupack/gpupack/internal/fixture"
)

// TestMetricsCarryDCGMLabels: every per-card series carries, next to our
// labels, dcgm-exporter's with the values it writes for the same card
// (gpu is the index, device "nvidia<gpu>", pci_bus_id NVML's form with a
// 32-bit domain, modelName NVML's name, hostname the node), and the
// per-container series carry the card's UUID and gpu; nothing copies
// DCGM's temperature or power.
func TestMetricsCarryDCGMLabels(t *testing.T) {
	pod := bound("p", `{"0":{"3":2}}`, "1", fixture.MakePod().Namespace("ns").UID("uid-p").GPUMem(2))
	h := newHarness(t, "mixed", pod)
	srv := httptest.NewServer(h.plugin.StatusHandler())
	defer srv.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(get(t, srv.URL+"/metrics")))
	if err != nil {
		t.Fatal(err)
	}

	// The simulated "mixed" node: two A100s, then two T4s, on the buses
	// of an HGX board.
	card := func(i int, model, bus string) map[string]string {
		idx := string(rune('0' + i))
		return map[string]string{
			"node": "node-a", "uuid": h.uuids[i], "index": idx, "model": model,
			"gpu": idx, "UUID": h.uuids[i], "pci_bus_id": bus, "device": "nvidia" + idx, "modelName": model, "hostname": "node-a",
		}
	}
	wantCards := []map[string]string{
		card(0, "NVIDIA A100-SXM4-80GB", "00000000:07:00.0"),
		card(1, "NVIDIA A100-SXM4-80GB", "00000000:0F:00.0"),
		card(2, "Tesla T4", "00000000:47:00.0"),
		card(3, "Tesla T4", "00000000:4E:00.0"),
	}
	for _, name := range []string{"card_memory_total_bytes", "card_memory_used_bytes", "card_memory_allocated_bytes",
		"card_memory_unattributed_bytes", "card_utilization_ratio", "card_memory_utilization_ratio", "card_healthy", "card_sample_ok"} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(wantCards, labelSets(families["gpupack_device_plugin_"+name])); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
	wantPod := []map[string]string{{
		"node": "node-a", "namespace": "ns", "pod": "p", "container": "c0", "uuid": h.uuids[3], "UUID": h.uuids[3], "gpu": "3",
	}}
	for _, name := range []string{"pod_memory_used_bytes", "pod_memory_limit_bytes", "pod_memory_over_share"} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(wantPod, labelSets(families["gpupack_device_plugin_"+name])); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
	for name := range families {
		if strings.Contains(name, "temperature") || strings.Contains(name, "power") {
			t.Errorf("%s copies DCGM: join dcgm-exporter's series instead", name)
		}
	}
}

// labelSets are the label sets of a family's series, by gpu label (the
// exposition sorts them by label values, UUID first).
func labelSets(mf *dto.MetricFamily) []map[string]string {
	var out []map[string]string
	for _, m := range mf.GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["gpu"] < out[j]["gpu"] })
	return out
}
