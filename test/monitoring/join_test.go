package monitoring

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"

	"github.com/gpupack/gpupack/nvml"
)

// readmeJoin is the README's DCGM join: MiB in use on each card, as DCGM
// reads it, beyond what gpupack granted there.
const readmeJoin = `DCGM_FI_DEV_FB_USED - on(UUID) group_left(node, index) (gpupack_device_plugin_card_memory_allocated_bytes / 1048576)`

// TestQueriesEvaluate loads what the components really serve, as
// Prometheus would store it after scraping them (with each target's own
// job, instance, namespace and pod), next to dcgm-exporter's series for the
// same cards written the way dcgm-exporter writes them, and evaluates
// every dashboard query and the README's join with Prometheus's engine:
// none may fail (a join that matches many-to-many, say), and the joins
// with DCGM must find every card.
func TestQueriesEvaluate(t *testing.T) {
	dp, devs := devicePluginMetrics(t)
	st := &memStorage{}
	addSeries(t, st, extenderMetrics(t), labels.FromStrings("job", "gpupack-scheduler-metrics", "instance", "10.0.0.5:10252", "namespace", "kube-system", "pod", "gpupack-scheduler-0"))
	addSeries(t, st, dp, labels.FromStrings("job", "gpupack-device-plugin-metrics", "instance", "10.0.0.1:9445"))
	// dcgm-exporter on the same node: MiB in use 4096 + 100*index, 40 + index °C.
	for _, d := range devs {
		b := labels.NewBuilder(dcgmSeriesLabels(d, "node-a"))
		for name, v := range map[string]int{"DCGM_FI_DEV_FB_USED": 4096 + 100*d.Index, "DCGM_FI_DEV_GPU_TEMP": 40 + d.Index} {
			if err := st.add(b.Set(model.MetricNameLabel, name).Labels(), float64(v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Prometheus's engine as the server sets it up: the @ modifier and
	// negative offsets on, a subquery without a step evaluated every minute
	// (the server's evaluation interval); its parser without experimental
	// functions, as the server's defaults have it.
	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples:               1e6,
		Timeout:                  100 * time.Second,
		LookbackDelta:            5 * time.Minute,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
	})
	t.Cleanup(func() {
		if err := engine.Close(); err != nil {
			t.Error(err)
		}
	})
	at := time.Unix(0, 0).Add(20 * time.Minute)

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), readmeJoin) {
		t.Errorf("README.md does not show the join this test checks:\n%s", readmeJoin)
	}
	// The README's join: card 0 has 2 GiB granted (to pod p): 4096 - 2048.
	got := eval(t, engine, st, readmeJoin, at)
	want := map[string]float64{}
	for _, d := range devs {
		want[strconv.Itoa(d.Index)] = float64(4096 + 100*d.Index)
	}
	want["0"] -= 2048
	if diff := byIndex(t, got); fmt.Sprint(diff) != fmt.Sprint(want) {
		t.Errorf("%s = %v, want %v by index", readmeJoin, diff, want)
	}

	d := loadDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$node", ".*", "$card", ".*")
	for _, q := range d.queries() {
		if strings.HasPrefix(q.where, "variable") {
			continue
		}
		t.Run(q.where, func(t *testing.T) {
			v := eval(t, engine, st, vars.Replace(q.expr), at)
			if strings.Contains(q.expr, "DCGM_") && len(v) != len(devs) {
				t.Errorf("%s: %d series, want one per card (%d):\n%v", q.expr, len(v), len(devs), v)
			}
		})
	}
}

// dcgmSeriesLabels are the labels dcgm-exporter (Kubernetes mode, NODE_NAME set)
// writes for a card, with the target labels Prometheus adds to its scrape.
func dcgmSeriesLabels(d nvml.Device, node string) labels.Labels {
	return labels.FromStrings(
		"gpu", strconv.Itoa(d.Index), "UUID", d.UUID, "pci_bus_id", d.PCIBusID, "device", fmt.Sprintf("nvidia%d", d.Index),
		"modelName", d.Model, "hostname", node, "DCGM_FI_DRIVER_VERSION", "550.54.15",
		"job", "nvidia-dcgm-exporter", "instance", "10.0.0.1:9400", "namespace", "gpu-operator", "pod", "nvidia-dcgm-exporter-abcde")
}

// addSeries stores the families' samples in st as Prometheus stores a
// scrape of them, each series constant over half an hour, with the
// target's labels added.
func addSeries(t *testing.T, st *memStorage, families map[string]*dto.MetricFamily, target labels.Labels) {
	t.Helper()
	add := func(name string, m *dto.Metric, extra labels.Label, v float64) {
		b := labels.NewBuilder(labels.EmptyLabels())
		has := map[string]bool{}
		for _, lp := range m.GetLabel() {
			b.Set(lp.GetName(), lp.GetValue())
			has[lp.GetName()] = true
		}
		if extra.Name != "" {
			b.Set(extra.Name, extra.Value)
			has[extra.Name] = true
		}
		// The target's labels unless the series carries its own (as
		// honor_labels keeps them).
		target.Range(func(tl labels.Label) {
			if !has[tl.Name] {
				b.Set(tl.Name, tl.Value)
			}
		})
		b.Set(model.MetricNameLabel, name)
		if err := st.add(b.Labels(), v); err != nil {
			t.Fatal(err)
		}
	}
	bound := func(name string, f float64) labels.Label {
		return labels.Label{Name: name, Value: strconv.FormatFloat(f, 'g', -1, 64)}
	}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m, labels.Label{}, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, m, labels.Label{}, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, m, labels.Label{}, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, bk := range h.GetBucket() {
					add(name+"_bucket", m, bound("le", bk.GetUpperBound()), float64(bk.GetCumulativeCount()))
					inf = inf || math.IsInf(bk.GetUpperBound(), +1)
				}
				// The text format lists the +Inf bucket; the protobuf one
				// leaves it to the count.
				if !inf {
					add(name+"_bucket", m, labels.Label{Name: "le", Value: "+Inf"}, float64(h.GetSampleCount()))
				}
				add(name+"_sum", m, labels.Label{}, h.GetSampleSum())
				add(name+"_count", m, labels.Label{}, float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					if !math.IsNaN(q.GetValue()) {
						add(name, m, bound("quantile", q.GetQuantile()), q.GetValue())
					}
				}
				add(name+"_sum", m, labels.Label{}, s.GetSampleSum())
				add(name+"_count", m, labels.Label{}, float64(s.GetSampleCount()))
			}
		}
	}
}

func eval(t *testing.T, engine *promql.Engine, st storage.Queryable, expr string, at time.Time) promql.Vector {
	t.Helper()
	q, err := engine.NewInstantQuery(context.Background(), st, nil, expr, at)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%s: %v", expr, res.Err)
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		return v
	case promql.Scalar:
		return promql.Vector{{F: v.V}}
	}
	t.Fatalf("%s: a %s", expr, res.Value.Type())
	return nil
}

// byIndex maps each sample's index label to its value.
func byIndex(t *testing.T, v promql.Vector) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range v {
		idx := s.Metric.Get("index")
		if idx == "" || s.Metric.Get("node") != "node-a" {
			t.Errorf("sample %s lacks gpupack's node and index", s.Metric)
		}
		out[idx] = s.F
	}
	return out
}
