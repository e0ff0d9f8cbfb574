package perf

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNearestRank(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		// ceil(0.5*4) = 2nd of 4.
		{"median of four", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		// ceil(0.99*100) = 99th of 1..100.
		{"p99 of a hundred", ms(hundred...), 0.99, 99 * time.Millisecond},
		// ceil(0.99*10) = 10th: the largest.
		{"p99 of ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 50), 0.99, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nearestRank(tc.sorted, tc.q); got != tc.want {
				t.Fatalf("nearestRank(%v, %v) = %v, want %v", tc.sorted, tc.q, got, tc.want)
			}
		})
	}
}

func TestHistogramQuantiles(t *testing.T) {
	const exposition = `# HELP gpupack_extender_request_duration_seconds Time to answer one extender request, by verb.
# TYPE gpupack_extender_request_duration_seconds histogram
gpupack_extender_request_duration_seconds_bucket{verb="filter",le="0.001"} 50
gpupack_extender_request_duration_seconds_bucket{verb="filter",le="0.002"} 100
gpupack_extender_request_duration_seconds_bucket{verb="filter",le="+Inf"} 100
gpupack_extender_request_duration_seconds_sum{verb="filter"} 0.1
gpupack_extender_request_duration_seconds_count{verb="filter"} 100
gpupack_extender_request_duration_seconds_bucket{verb="prioritize",le="0.001"} 0
gpupack_extender_request_duration_seconds_bucket{verb="prioritize",le="0.002"} 0
gpupack_extender_request_duration_seconds_bucket{verb="prioritize",le="+Inf"} 0
gpupack_extender_request_duration_seconds_sum{verb="prioritize"} 0
gpupack_extender_request_duration_seconds_count{verb="prioritize"} 0
gpupack_extender_request_duration_seconds_bucket{verb="bind",le="0.001"} 1
gpupack_extender_request_duration_seconds_bucket{verb="bind",le="0.002"} 1
gpupack_extender_request_duration_seconds_bucket{verb="bind",le="+Inf"} 1
gpupack_extender_request_duration_seconds_sum{verb="bind"} 0.0005
gpupack_extender_request_duration_seconds_count{verb="bind"} 1
`
	got, err := histogramQuantiles([]byte(exposition), []string{"filter", "prioritize"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]quantiles{
		// p50: rank 0.5*100 = 50 falls in (0, 1ms], holding 50: 0 + 1ms*50/50 = 1ms.
		// p99: rank 99 falls in (1ms, 2ms], holding 50 from 50: 1ms + 1ms*(99-50)/50 = 1.98ms.
		"filter": {count: 100, p50: time.Millisecond, p99: 1980 * time.Microsecond},
		// No call: no quantile.
		"prioritize": {count: 0},
		// bind was not asked for.
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(quantiles{}), cmp.Comparer(func(a, b time.Duration) bool {
		return (a - b).Abs() < time.Microsecond // float seconds to nanoseconds
	})); diff != "" {
		t.Errorf("quantiles (-want +got):\n%s", diff)
	}
	if _, err := histogramQuantiles([]byte("# TYPE other counter\nother 1\n"), []string{"filter"}); err == nil || !strings.Contains(err.Error(), durationMetric) {
		t.Errorf("without the histogram: error %v, want one naming %s", err, durationMetric)
	}
}

// TestCountersBy reads a counter's values by label from an exposition.
func TestCountersBy(t *testing.T) {
	const exposition = `# HELP gpupack_extender_node_answers_total Answers.
# TYPE gpupack_extender_node_answers_total counter
gpupack_extender_node_answers_total{source="kept"} 2
gpupack_extender_node_answers_total{source="rated"} 3
`
	got, err := countersBy([]byte(exposition), answersMetric, "source")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]float64{"kept": 2, "rated": 3}; !cmp.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := countersBy([]byte("# TYPE other counter\nother 1\n"), answersMetric, "source"); err == nil || !strings.Contains(err.Error(), answersMetric) {
		t.Errorf("without the counter: error %v, want one naming %s", err, answersMetric)
	}
}

// TestVerbTimer sends requests through the timer over real HTTP: only the
// extender verbs' POSTs are timed, each once, aborted ones too (as the
// reverse proxy aborts a response whose client hung up).
func TestVerbTimer(t *testing.T) {
	timer := newVerbTimer()
	srv := httptest.NewServer(timer.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 10000))) // more than the server buffers
		if r.URL.RawQuery == "abort" {
			panic(http.ErrAbortHandler)
		}
	})))
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/gpushare-scheduler/filter"},
		{http.MethodPost, "/gpushare-scheduler/filter"},
		{http.MethodPost, "/gpushare-scheduler/prioritize"},
		{http.MethodPost, "/gpushare-scheduler/prioritize?abort"},
		{http.MethodPost, "/gpushare-scheduler/bind"},
		{http.MethodGet, "/gpushare-scheduler/inspect"},
		{http.MethodGet, "/metrics"},
		{http.MethodGet, "/gpushare-scheduler/filter"},
	} {
		req, err := http.NewRequest(r.method, srv.URL+r.path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			continue // the aborted one, if its headers had not left
		}
		_, _ = io.Copy(io.Discard, resp.Body) // fails for the aborted one
		resp.Body.Close()
	}
	srv.Close() // waits for the handlers, which record after the response
	got := map[string]int{}
	for verb, q := range timer.quantiles() {
		got[verb] = q.count
		if q.p50 <= 0 || q.p99 < q.p50 {
			t.Errorf("%s: p50 %v, p99 %v: want 0 < p50 <= p99", verb, q.p50, q.p99)
		}
	}
	if diff := cmp.Diff(map[string]int{"filter": 2, "prioritize": 2, "bind": 1}, got); diff != "" {
		t.Errorf("calls timed (-want +got):\n%s", diff)
	}
}

func TestCPUPerPod(t *testing.T) {
	before := map[string]float64{"kube-apiserver": 10, "gpupack-extender": 2, "etcd": 1}
	after := map[string]float64{"kube-apiserver": 14, "gpupack-extender": 3, "etcd": 1.5}
	got := cpuPerPod(before, after, 1000)
	want := cpuSpent{"kube-apiserver": 4, "gpupack-extender": 1, "etcd": 0.5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("cpuPerPod (-want +got):\n%s", diff)
	}
	if got.total() != 5.5 {
		t.Fatalf("total = %v, want 5.5", got.total())
	}
	if s, want := got.String(), "kube-apiserver 4.00 ms, gpupack-extender 1.00 ms, etcd 0.50 ms, all 5.50 ms"; s != want {
		t.Fatalf("String() = %q, want %q", s, want)
	}
	if s, want := (cpuSpent{"b": 1, "c": 1, "a": 1}).String(), "a 1.00 ms, b 1.00 ms, c 1.00 ms, all 3.00 ms"; s != want {
		t.Fatalf("String() of a tie = %q, want %q", s, want)
	}
}

func TestCPUTimesOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
	got, err := cpuTimes(map[string]int{"me": os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if got["me"] <= 0 {
		t.Fatalf("this process has spent %v s of CPU, want more than 0", got["me"])
	}
	if _, err := cpuTimes(map[string]int{"gone": -1}); err == nil {
		t.Fatal("cpuTimes of process -1: no error")
	}
}
