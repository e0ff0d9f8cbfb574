package inspect

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	restclient "k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gpupack/gpupack/internal/fixture"
)

// TestParseMetricsExposition covers what the text format allows beyond
// the plain lines of TestParseMetrics.
func TestParseMetricsExposition(t *testing.T) {
	tests := []struct {
		name string
		body string
		want map[int]Live
	}{
		{
			name: "empty body",
			body: "",
			want: map[int]Live{},
		},
		{
			name: "escaped label values: quotes, commas, backslashes, new-lines, braces",
			body: `gpupack_device_plugin_card_utilization_ratio{model="a \"b\", c\\d\ne} f",index="3",uuid="GPU-x"} 0.75` + "\n",
			want: map[int]Live{3: {Utilization: 0.75}},
		},
		{
			name: "HELP with escapes, TYPE, free comments, blank lines",
			body: `# HELP gpupack_device_plugin_card_memory_used_bytes Memory in use {index="9"} \\ on\nthe card.
# TYPE gpupack_device_plugin_card_memory_used_bytes gauge
# a comment that names gpupack_device_plugin_card_memory_used_bytes{index="8"} 1

gpupack_device_plugin_card_memory_used_bytes{index="0"} 2048

`,
			want: map[int]Live{0: {UsedBytes: 2048}},
		},
		{
			name: "timestamps",
			body: `gpupack_device_plugin_card_utilization_ratio{index="0"} 0.5 1700000000000
gpupack_device_plugin_card_memory_used_bytes{index="0"} 1024 -1
`,
			want: map[int]Live{0: {Utilization: 0.5, UsedBytes: 1024}},
		},
		{
			// 8.0e+10 = 80 GB; 1.5E-1 = 0.15; 1.6e1 = 16.
			name: "exponent floats",
			body: `gpupack_device_plugin_card_memory_used_bytes{index="0"} 8.0e+10
gpupack_device_plugin_card_utilization_ratio{index="0"} 1.5E-1
gpupack_device_plugin_card_memory_used_bytes{index="1"} 1.6e1
`,
			want: map[int]Live{0: {Utilization: 0.15, UsedBytes: 80e9}, 1: {UsedBytes: 16}},
		},
		{
			name: "NaN and infinite values: the card is not measured, left out",
			body: `gpupack_device_plugin_card_utilization_ratio{index="0"} NaN
gpupack_device_plugin_card_memory_used_bytes{index="0"} 1024
gpupack_device_plugin_card_memory_used_bytes{index="1"} +Inf
gpupack_device_plugin_card_sample_ok{index="1"} 1
gpupack_device_plugin_card_utilization_ratio{index="2"} 0.5
gpupack_device_plugin_card_sample_ok{index="2"} Nan
gpupack_device_plugin_card_utilization_ratio{index="3"} 0.25
`,
			want: map[int]Live{3: {Utilization: 0.25}},
		},
		{
			name: "white space around labels, trailing comma, no final new-line",
			body: `gpupack_device_plugin_card_utilization_ratio { index = "1" , model = "T4" , }   0.5`,
			want: map[int]Live{1: {Utilization: 0.5}},
		},
		{
			name: "quoted metric name (UTF-8 syntax)",
			body: `{"gpupack_device_plugin_card_utilization_ratio",index="0"} 0.5` + "\n",
			want: map[int]Live{0: {Utilization: 0.5}},
		},
		{
			name: "series with no index, or one that is not an integer, are ignored",
			body: `gpupack_device_plugin_card_utilization_ratio{model="x"} 0.5
gpupack_device_plugin_card_utilization_ratio{index="one"} 0.5
gpupack_device_plugin_card_utilization_ratio{index=""} 0.5
gpupack_device_plugin_card_utilization_ratio{index="4"} 0.5
`,
			want: map[int]Live{4: {Utilization: 0.5}},
		},
		{
			name: "typed counter and untyped series are read too",
			body: `# TYPE gpupack_device_plugin_card_memory_used_bytes counter
gpupack_device_plugin_card_memory_used_bytes{index="0"} 7
# TYPE gpupack_device_plugin_card_utilization_ratio untyped
gpupack_device_plugin_card_utilization_ratio{index="0"} 0.1
`,
			want: map[int]Live{0: {Utilization: 0.1, UsedBytes: 7}},
		},
		{
			name: "the last card_sample_ok of a card wins",
			body: `gpupack_device_plugin_card_sample_ok{index="0"} 0
gpupack_device_plugin_card_sample_ok{index="0"} 1
gpupack_device_plugin_card_sample_ok{index="1"} 1
gpupack_device_plugin_card_sample_ok{index="1"} 0
`,
			want: map[int]Live{0: {}},
		},
		{
			name: "histograms and summaries of other families are skipped",
			body: `# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0.5"} 1e-05
go_gc_duration_seconds_sum 0.1
go_gc_duration_seconds_count 3
# TYPE gpupack_extender_filter_seconds histogram
gpupack_extender_filter_seconds_bucket{le="0.1"} 1
gpupack_extender_filter_seconds_bucket{le="+Inf"} 2
gpupack_extender_filter_seconds_sum 0.3
gpupack_extender_filter_seconds_count 2
gpupack_device_plugin_card_utilization_ratio{index="0"} 0.5
`,
			want: map[int]Live{0: {Utilization: 0.5}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMetrics([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("live (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseMetricsMalformed: a body that is not text exposition is an
// error that says where and what, never an empty view.
func TestParseMetricsMalformed(t *testing.T) {
	tests := []struct {
		name string
		body string
		// want: in the error's text.
		want string
	}{
		{
			name: "value not a number",
			body: `gpupack_device_plugin_card_utilization_ratio{index="0"} abc` + "\n",
			want: `line 1: expected float as value, got "abc"`,
		},
		{
			name: "value missing",
			body: `gpupack_device_plugin_card_utilization_ratio{index="0"}` + "\n",
			want: "line 1: expected float as value",
		},
		{
			name: "unterminated label value",
			body: "gpupack_device_plugin_card_utilization_ratio{index=\"0} 0.5\n",
			want: "line 1: label value",
		},
		{
			name: "label value not quoted",
			body: "gpupack_device_plugin_card_utilization_ratio{index=0} 0.5\n",
			want: "line 1: expected '\"' at start of label value",
		},
		{
			name: "timestamp not an integer",
			body: "# TYPE x gauge\nx 1\ngpupack_device_plugin_card_utilization_ratio{index=\"0\"} 0.5 now\n",
			want: `line 3: expected integer as timestamp, got "now"`,
		},
		{
			name: "an HTML page in place of metrics",
			body: "<html><body>502 Bad Gateway</body></html>\n",
			want: "line 1: invalid metric name",
		},
		{
			name: "a second TYPE line",
			body: "# TYPE gpupack_device_plugin_card_sample_ok gauge\n# TYPE gpupack_device_plugin_card_sample_ok counter\n",
			want: "line 2: second TYPE line",
		},
		{
			name: "a card series that is a histogram",
			body: `# TYPE gpupack_device_plugin_card_utilization_ratio histogram
gpupack_device_plugin_card_utilization_ratio_bucket{index="0",le="+Inf"} 1
gpupack_device_plugin_card_utilization_ratio_sum{index="0"} 0.5
gpupack_device_plugin_card_utilization_ratio_count{index="0"} 1
`,
			want: "gpupack_device_plugin_card_utilization_ratio is a histogram; want a gauge",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMetrics([]byte(tc.body))
			if err == nil {
				t.Fatalf("no error; live %v", got)
			}
			if !strings.HasPrefix(err.Error(), "metrics: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one that starts with %q and says %q", err, "metrics: ", tc.want)
			}
		})
	}
}

// TestParseMetricsFromARegistry reads what client_golang serves for the
// device plugin's per-card series (the names and labels of
// deviceplugin/metrics.go, which inspect must not import), next to the Go
// runtime's summaries and histograms, over real HTTP.
func TestParseMetricsFromARegistry(t *testing.T) {
	// Ours, then dcgm-exporter's (gpu, like index, is the card's index).
	labels := []string{"node", "uuid", "index", "model", "gpu", "UUID", "pci_bus_id", "device", "modelName", "hostname"}
	gauge := func(name string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "gpupack_device_plugin", Name: name, Help: "Help with a \\ and a\nnew-line.",
		}, labels)
	}
	util, used, ok := gauge("card_utilization_ratio"), gauge("card_memory_used_bytes"), gauge("card_sample_ok")
	total, alloc := gauge("card_memory_total_bytes"), gauge("card_memory_allocated_bytes")
	reg := prometheus.NewRegistry()
	reg.MustRegister(util, used, ok, total, alloc, collectors.NewGoCollector(),
		prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gpupack_device_plugin_test_seconds", Help: "h"}))

	card := func(uuid, index, model string) []string {
		return []string{"n", uuid, index, model, index, uuid, "00000000:07:00.0", "nvidia" + index, model, "n"}
	}
	odd := `Odd "model", with \ and }`
	util.WithLabelValues(card("GPU-a", "0", "NVIDIA A100-SXM4-80GB")...).Set(0.5)
	used.WithLabelValues(card("GPU-a", "0", "NVIDIA A100-SXM4-80GB")...).Set(4 << 30)
	ok.WithLabelValues(card("GPU-a", "0", "NVIDIA A100-SXM4-80GB")...).Set(1)
	total.WithLabelValues(card("GPU-a", "0", "NVIDIA A100-SXM4-80GB")...).Set(80 << 30)
	util.WithLabelValues(card("GPU-b", "1", odd)...).Set(0.0625)
	used.WithLabelValues(card("GPU-b", "1", odd)...).Set(1.5e10)
	ok.WithLabelValues(card("GPU-b", "1", odd)...).Set(1)
	alloc.WithLabelValues(card("GPU-b", "1", odd)...).Set(2 << 30)
	// card 2 could not be sampled: only its total and sample_ok, as the
	// plugin's collector writes them.
	total.WithLabelValues(card("GPU-c", "2", "x")...).Set(16 << 30)
	ok.WithLabelValues(card("GPU-c", "2", "x")...).Set(0)

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `model="Odd \"model\", with \\ and }"`) {
		t.Fatalf("the registry did not escape the odd model as this test expects:\n%s", body)
	}
	got, err := ParseMetrics(body)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	// 1.5e10 bytes = 15,000,000,000; card 2 left out.
	want := map[int]Live{0: {Utilization: 0.5, UsedBytes: 4 << 30}, 1: {Utilization: 0.0625, UsedBytes: 15_000_000_000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("live (-want +got):\n%s", diff)
	}
}

// TestPluginMetricsMalformed: the error of a body that is not metrics
// names the pod it came from.
func TestPluginMetricsMalformed(t *testing.T) {
	p := fixture.MakePod().Name("dp-a").Namespace("kube-system").Node("a100-0").Phase(corev1.PodRunning).Container("", "", "").Obj()
	p.Labels = map[string]string{"app.kubernetes.io/name": "gpupack-device-plugin"}
	cs := fake.NewClientset(p)
	cs.AddProxyReactor("pods", func(k8stesting.Action) (bool, restclient.ResponseWrapper, error) {
		return true, response{"<html>no</html>\n"}, nil
	})
	got, err := (&PluginMetrics{Client: cs}).Live(context.Background(), "a100-0")
	if err == nil || !strings.Contains(err.Error(), "kube-system/dp-a") || !strings.Contains(err.Error(), "invalid metric name") {
		t.Errorf("live %v, error %v; want an error naming kube-system/dp-a and what was wrong", got, err)
	}
}
