package monitoring

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// memStorage holds for every series one sample a minute from 0 to
// loadMinutes minutes after the Unix epoch, each of the series' one value,
// as a scrape every minute of a constant metric stores it.
const loadMinutes = 30

// memStorage is a storage.Queryable over constant series held in memory,
// kept sorted by labels. It stands in for a TSDB so that the test module
// needs Prometheus's engine and storage interfaces, not its TSDB, scrape
// and discovery packages (and the cloud SDKs those bring).
type memStorage struct {
	series []storage.Series
}

var (
	_ storage.Queryable = (*memStorage)(nil)
	_ storage.Querier   = memQuerier{}
	_ storage.SeriesSet = (*seriesSet)(nil)
	_ chunks.Sample     = floatSample{}
)

// add stores the series lset with the value v at every minute from 0 to
// loadMinutes. A label set added twice is an error: Prometheus would have
// one series there, not two.
func (s *memStorage) add(lset labels.Labels, v float64) error {
	if lset.Get(model.MetricNameLabel) == "" {
		return fmt.Errorf("series %s has no metric name", lset)
	}
	i, found := slices.BinarySearchFunc(s.series, lset, func(e storage.Series, l labels.Labels) int {
		return labels.Compare(e.Labels(), l)
	})
	if found {
		return fmt.Errorf("series %s added twice", lset)
	}
	samples := make([]chunks.Sample, 0, loadMinutes+1)
	for m := range loadMinutes + 1 {
		samples = append(samples, floatSample{t: (time.Duration(m) * time.Minute).Milliseconds(), f: v})
	}
	s.series = slices.Insert(s.series, i, storage.Series(storage.NewListSeries(lset, samples)))
	return nil
}

// Querier returns a querier over every series; the engine itself keeps to
// the times it needs.
func (s *memStorage) Querier(_, _ int64) (storage.Querier, error) {
	return memQuerier{series: s.series}, nil
}

// memQuerier selects from series sorted by labels.
type memQuerier struct {
	series []storage.Series
}

// Select returns the series that every matcher matches (the metric name
// being the __name__ label), in label order whether or not sortSeries asks
// for it.
func (q memQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range q.series {
		if matchesAll(s.Labels(), matchers) {
			out = append(out, s)
		}
	}
	return &seriesSet{series: out, i: -1}
}

// matchesAll tells whether lset satisfies every matcher; an absent label
// has the empty value, as in Prometheus.
func matchesAll(lset labels.Labels, matchers []*labels.Matcher) bool {
	for _, m := range matchers {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

// errLabelQueries: Prometheus asks a querier for label names and values
// in its HTTP API, never while evaluating a query.
var errLabelQueries = errors.New("memStorage answers Select only")

// LabelValues is not needed to evaluate a query: it fails.
func (memQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, errLabelQueries
}

// LabelNames is not needed to evaluate a query: it fails.
func (memQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, errLabelQueries
}

// Close releases nothing.
func (memQuerier) Close() error { return nil }

// seriesSet iterates over a slice of series.
type seriesSet struct {
	series []storage.Series
	i      int
}

func (s *seriesSet) Next() bool {
	s.i++
	return s.i < len(s.series)
}

func (s *seriesSet) At() storage.Series                { return s.series[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// floatSample is one float sample (no start timestamp, no histogram).
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }

// TestMemStorageSelect checks the stand-in storage against what a TSDB
// answers: every matcher holds (the metric name's too, an absent label
// being empty) and the series come sorted by labels, whatever order they
// were added in.
func TestMemStorageSelect(t *testing.T) {
	st := &memStorage{}
	for _, l := range []labels.Labels{
		labels.FromStrings(model.MetricNameLabel, "up", "job", "b"),
		labels.FromStrings(model.MetricNameLabel, "up", "job", "a", "instance", "2"),
		labels.FromStrings(model.MetricNameLabel, "other", "job", "a"),
		labels.FromStrings(model.MetricNameLabel, "up", "job", "a", "instance", "1"),
	} {
		if err := st.add(l, 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		selector string
		want     []string
	}{
		{`up`, []string{`{__name__="up", instance="1", job="a"}`, `{__name__="up", instance="2", job="a"}`, `{__name__="up", job="b"}`}},
		{`{__name__=~"up|other", job="a"}`, []string{`{__name__="other", job="a"}`, `{__name__="up", instance="1", job="a"}`, `{__name__="up", instance="2", job="a"}`}},
		{`{__name__!="up"}`, []string{`{__name__="other", job="a"}`}},
		{`up{job!="a"}`, []string{`{__name__="up", job="b"}`}},
		{`up{instance=""}`, []string{`{__name__="up", job="b"}`}},
		{`up{instance=~"1|3", job=~"a|b"}`, []string{`{__name__="up", instance="1", job="a"}`}},
		{`up{instance!~"1"}`, []string{`{__name__="up", instance="2", job="a"}`, `{__name__="up", job="b"}`}},
		{`{job="c"}`, nil},
	} {
		t.Run(tc.selector, func(t *testing.T) {
			ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			q, err := st.Querier(0, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			set := q.Select(context.Background(), true, nil, ms...)
			for set.Next() {
				got = append(got, set.At().Labels().String())
			}
			if err := set.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Select(%s) = %s, want %s", tc.selector, strings.Join(got, " "), strings.Join(tc.want, " "))
			}
		})
	}
	if err := st.add(labels.FromStrings(model.MetricNameLabel, "up", "job", "b"), 2); err == nil {
		t.Error("a series added twice was accepted")
	}
	if err := st.add(labels.FromStrings("job", "b"), 2); err == nil {
		t.Error("a series without a metric name was accepted")
	}
}
