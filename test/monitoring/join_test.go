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
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
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
	var load strings.Builder
	load.WriteString("load 1m\n")
	writeSeries(&load, extenderMetrics(t), `job="gpupack-scheduler-metrics",instance="10.0.0.5:10252",namespace="kube-system",pod="gpupack-scheduler-0"`)
	writeSeries(&load, dp, `job="gpupack-device-plugin-metrics",instance="10.0.0.1:9445"`)
	// dcgm-exporter on the same node: MiB in use 4096 + 100*index, 40 + index °C.
	for _, d := range devs {
		l := dcgmSeriesLabels(d, "node-a")
		fmt.Fprintf(&load, "  DCGM_FI_DEV_FB_USED{%s} %dx30\n", l, 4096+100*d.Index)
		fmt.Fprintf(&load, "  DCGM_FI_DEV_GPU_TEMP{%s} %dx30\n", l, 40+d.Index)
	}
	st := promqltest.LoadedStorage(t, load.String())
	engine := promqltest.NewTestEngine(t, false, 5*time.Minute, 1e6)
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
func dcgmSeriesLabels(d nvml.Device, node string) string {
	return fmt.Sprintf(`gpu="%d",UUID=%q,pci_bus_id=%q,device="nvidia%d",modelName=%q,hostname=%q,DCGM_FI_DRIVER_VERSION="550.54.15",`+
		`job="nvidia-dcgm-exporter",instance="10.0.0.1:9400",namespace="gpu-operator",pod="nvidia-dcgm-exporter-abcde"`,
		d.Index, d.UUID, d.PCIBusID, d.Index, d.Model, node)
}

// writeSeries writes the families' samples as promqltest load lines, each
// series constant over half an hour, with the target's labels added.
func writeSeries(b *strings.Builder, families map[string]*dto.MetricFamily, target string) {
	line := func(name string, m *dto.Metric, extra string, v float64) {
		var l []string
		for _, lp := range m.GetLabel() {
			l = append(l, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		if extra != "" {
			l = append(l, extra)
		}
		// The target's labels unless the series carries its own (as
		// honor_labels keeps them).
		for _, tl := range strings.Split(target, ",") {
			if !strings.Contains(","+strings.Join(l, ",")+",", ","+strings.SplitN(tl, "=", 2)[0]+"=") {
				l = append(l, tl)
			}
		}
		fmt.Fprintf(b, "  %s{%s} %sx30\n", name, strings.Join(l, ","), strconv.FormatFloat(v, 'g', -1, 64))
	}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				line(name, m, "", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				line(name, m, "", m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				line(name, m, "", m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, bk := range h.GetBucket() {
					line(name+"_bucket", m, fmt.Sprintf("le=%q", strconv.FormatFloat(bk.GetUpperBound(), 'g', -1, 64)), float64(bk.GetCumulativeCount()))
				}
				line(name+"_bucket", m, `le="+Inf"`, float64(h.GetSampleCount()))
				line(name+"_sum", m, "", h.GetSampleSum())
				line(name+"_count", m, "", float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					if !math.IsNaN(q.GetValue()) {
						line(name, m, fmt.Sprintf("quantile=%q", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)), q.GetValue())
					}
				}
				line(name+"_sum", m, "", s.GetSampleSum())
				line(name+"_count", m, "", float64(s.GetSampleCount()))
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
