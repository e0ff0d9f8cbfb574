package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/procfs"
	"github.com/prometheus/prometheus/promql"
	"k8s.io/apimachinery/pkg/util/wait"
)

// proxiedVerbs are the extender verbs kube-scheduler calls, as the last
// element of their path and as the extender's histogram labels them.
var proxiedVerbs = []string{"filter", "prioritize", "bind"}

// durationMetric is the extender's request-duration histogram, by verb.
const durationMetric = "gpupack_extender_request_duration_seconds"

// verbTimer times extender calls in the proxy between kube-scheduler and
// the extender: from when the proxy has a request's headers to when it has
// handed the response's last byte to the connection.
type verbTimer struct {
	mu   sync.Mutex
	took map[string][]time.Duration
}

func newVerbTimer() *verbTimer { return &verbTimer{took: map[string][]time.Duration{}} }

// wrap is the middleware cluster.Options.ExtenderProxy takes.
func (t *verbTimer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		verb := path.Base(r.URL.Path)
		if r.Method != http.MethodPost || !slices.Contains(proxiedVerbs, verb) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		// Deferred, to count calls the proxy aborts (it panics with
		// http.ErrAbortHandler) when kube-scheduler hangs up as soon as it
		// has decoded the answer, before the response's last bytes: the
		// call is over for kube-scheduler then.
		defer func() {
			took := time.Since(start)
			t.mu.Lock()
			defer t.mu.Unlock()
			t.took[verb] = append(t.took[verb], took)
		}()
		next.ServeHTTP(w, r)
		// The response's tail may still be in the server's buffer.
		_ = http.NewResponseController(w).Flush()
	})
}

// quantiles summarise one verb's calls.
type quantiles struct {
	count    int
	p50, p99 time.Duration
}

// quantiles are the exact (nearest-rank) quantiles of each verb's calls.
func (t *verbTimer) quantiles() map[string]quantiles {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]quantiles{}
	for verb, took := range t.took {
		s := slices.Clone(took)
		slices.Sort(s)
		out[verb] = quantiles{count: len(s), p50: nearestRank(s, 0.5), p99: nearestRank(s, 0.99)}
	}
	return out
}

// nearestRank is the q-quantile of sorted: its smallest element with at
// least q of all at or below it.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// scrapeDurations reads the extender's request-duration histogram for
// verbs from its /metrics and estimates each one's quantiles from the
// buckets as Prometheus's histogram_quantile does (linear within a
// bucket: coarse, the buckets doubling from 0.1 ms).
func scrapeDurations(ctx context.Context, metricsURL string, verbs []string) (map[string]quantiles, error) {
	body, err := scrape(ctx, metricsURL, durationMetric)
	if err != nil {
		return nil, err
	}
	return histogramQuantiles(body, verbs)
}

// scrape reads the extender's /metrics, asking for metric's family alone.
func scrape(ctx context.Context, metricsURL, metric string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL+"?"+url.Values{"name[]": {metric}}.Encode(), nil)
	if err != nil {
		return nil, err
	}
	return get(req)
}

// family is metric's family in exposition, the extender's metrics.
func family(exposition []byte, metric string) (*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(exposition))
	if err != nil {
		return nil, fmt.Errorf("parsing the extender's metrics: %w", err)
	}
	f := families[metric]
	if f == nil {
		return nil, fmt.Errorf("the extender's metrics have no %s", metric)
	}
	return f, nil
}

func histogramQuantiles(exposition []byte, verbs []string) (map[string]quantiles, error) {
	f, err := family(exposition, durationMetric)
	if err != nil {
		return nil, err
	}
	out := map[string]quantiles{}
	for _, m := range f.Metric {
		verb := ""
		for _, l := range m.Label {
			if l.GetName() == "verb" {
				verb = l.GetValue()
			}
		}
		h := m.GetHistogram()
		if h == nil || !slices.Contains(verbs, verb) {
			continue
		}
		var buckets promql.Buckets
		for _, bk := range h.Bucket {
			buckets = append(buckets, promql.Bucket{UpperBound: bk.GetUpperBound(), Count: float64(bk.GetCumulativeCount())})
		}
		if len(buckets) == 0 || !math.IsInf(buckets[len(buckets)-1].UpperBound, 1) {
			buckets = append(buckets, promql.Bucket{UpperBound: math.Inf(1), Count: float64(h.GetSampleCount())})
		}
		q := quantiles{count: int(h.GetSampleCount())}
		if q.count > 0 {
			p50, _, _, _, _, _ := promql.BucketQuantile(0.5, buckets)
			p99, _, _, _, _, _ := promql.BucketQuantile(0.99, buckets)
			q.p50, q.p99 = seconds(p50), seconds(p99)
		}
		out[verb] = q
	}
	return out, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// answersMetric counts the extender's answers about nodes, by source:
// rated afresh, or kept from a pod of the same shape.
const answersMetric = "gpupack_extender_node_answers_total"

// scrapeAnswers reads the extender's answers about nodes by source.
func scrapeAnswers(ctx context.Context, metricsURL string) (map[string]float64, error) {
	body, err := scrape(ctx, metricsURL, answersMetric)
	if err != nil {
		return nil, err
	}
	return countersBy(body, answersMetric, "source")
}

// countersBy is the counter metric's values in exposition, by label.
func countersBy(exposition []byte, metric, label string) (map[string]float64, error) {
	f, err := family(exposition, metric)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == label && m.GetCounter() != nil {
				out[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out, nil
}

// memory is a process's resident memory now and at its peak.
type memory struct{ rss, peak uint64 }

func (m memory) String() string {
	return fmt.Sprintf("resident %.1f MiB, peak %.1f MiB", mib(m.rss), mib(m.peak))
}

// readMemory reads VmRSS and VmHWM (the kernel's high-water mark of the
// resident set) from /proc/<pid>/status.
func readMemory(pid int) (memory, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return memory{}, fmt.Errorf("extender process %d: %w", pid, err)
	}
	s, err := p.NewStatus()
	if err != nil {
		return memory{}, fmt.Errorf("extender process %d: %w", pid, err)
	}
	return memory{rss: s.VmRSS, peak: s.VmHWM}, nil
}

// inspected is what the benchmark reads of the extender's /inspect.
type inspected struct {
	Nodes []struct {
		Name      string `json:"name"`
		Total     int64  `json:"total"`
		Allocated int64  `json:"allocated"`
	} `json:"nodes"`
}

// waitExtenderNodes waits until the extender knows each node's cards.
func waitExtenderNodes(ctx context.Context, inspectURL string, nodes int) error {
	i := 0
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, stallLimit, true, func(ctx context.Context) (bool, error) {
		for ; i < nodes; i++ {
			var got inspected
			if last = inspect(ctx, inspectURL+"/"+nodeName(i), &got); last != nil || len(got.Nodes) != 1 || got.Nodes[0].Total == 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the extender to know node %s (%d of %d known; last error %v): %w", nodeName(i), i, nodes, last, err)
	}
	return nil
}

// waitExtenderReleased waits until the extender counts no GPU memory
// allocated on any node.
func waitExtenderReleased(ctx context.Context, inspectURL string) error {
	var left int64
	var last error
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, stallLimit, true, func(ctx context.Context) (bool, error) {
		var got inspected
		if last = inspect(ctx, inspectURL, &got); last != nil {
			return false, nil
		}
		left = 0
		for _, n := range got.Nodes {
			left += n.Allocated
		}
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the extender to release the deleted pods (%d units still allocated; last error %v): %w", left, last, err)
	}
	return nil
}

func inspect(ctx context.Context, u string, into *inspected) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	body, err := get(req)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, into)
}

var httpClient = &http.Client{Timeout: time.Minute}

func get(req *http.Request) ([]byte, error) {
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", req.URL, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}
