package extender

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/policy"
)

const namespace = "gpupack_extender"

// metrics are the extender's Prometheus series, on a registry of their own.
type metrics struct {
	registry   *prometheus.Registry
	duration   *prometheus.HistogramVec
	rejections *prometheus.CounterVec
	binds      *prometheus.CounterVec
	// rated and kept count node answers by source (node_answers_total).
	rated, kept prometheus.Counter
}

func newMetrics(c *cache.Cache) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Time to answer one extender request, by verb.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"verb"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "filter_rejections_total",
			Help: "Nodes a filter call rejected, by reason.",
		}, []string{"reason"}),
		binds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "binds_total",
			Help: "Bind calls, by result (bound, conflict, error).",
		}, []string{"result"}),
	}
	answers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "node_answers_total",
		Help: "Answers about a known node that evaluations gave, by source: rated afresh (rated), or kept from an evaluation of a pod of the same shape, with the node as it is now (kept). A high share of rated answers makes filter slow: new pod shapes, or the workload estimate rebuilt.",
	}, []string{"source"})
	m.rated, m.kept = answers.WithLabelValues("rated"), answers.WithLabelValues("kept")
	m.registry.MustRegister(m.duration, m.rejections, m.binds, answers, &cardCollector{cache: c},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// reasonLabel is the low-cardinality label of a rejection.
func reasonLabel(kind policy.UnfitKind) string {
	switch kind {
	case policy.UnfitNoCards:
		return "no_cards"
	case policy.UnfitModel:
		return "model"
	case policy.UnfitShare:
		return "share"
	case policy.UnfitMultiCard:
		return "multi_card"
	case policy.UnfitWholeCard:
		return "whole_card"
	case policy.UnfitTogether:
		return "together"
	case policy.UnfitCPU:
		return "cpu"
	case policy.UnfitMemory:
		return "memory"
	case policy.UnfitSearchBudget:
		return "search_budget"
	}
	return "other"
}

// Per-card series carry the labels of the device plugin's (node, uuid,
// index, model) and, with the same values, those of dcgm-exporter's that
// the extender knows (gpu, UUID, device, modelName, hostname: not
// pci_bus_id), as the plugin's do, so that DCGM's series join them on UUID
// without relabelling.
var (
	cardLabels    = []string{"node", "uuid", "index", "model", "gpu", "UUID", "device", "modelName", "hostname"}
	cardTotalDesc = prometheus.NewDesc(namespace+"_card_memory_total_bytes",
		"GPU memory of a card, as the extender counts it.", cardLabels, nil)
	cardAllocDesc = prometheus.NewDesc(namespace+"_card_memory_allocated_bytes",
		"GPU memory of a card allocated to pods (bound or being bound).", cardLabels, nil)
	cardHealthDesc = prometheus.NewDesc(namespace+"_card_healthy",
		"1 when the card is healthy, 0 when the extender keeps pods off it.", cardLabels, nil)
)

// cardCollector reads per-card series from the cache at scrape time.
type cardCollector struct{ cache *cache.Cache }

var _ prometheus.Collector = (*cardCollector)(nil)

func (cc *cardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cardTotalDesc
	ch <- cardAllocDesc
	ch <- cardHealthDesc
}

func (cc *cardCollector) Collect(ch chan<- prometheus.Metric) {
	unit := float64(cache.UnitBytes(cc.cache.Unit()))
	for _, u := range cc.cache.Usage() {
		idx := strconv.Itoa(u.Index)
		labels := []string{u.Node, u.UUID, idx, u.Model, idx, u.UUID, "nvidia" + idx, u.Model, u.Node}
		ch <- prometheus.MustNewConstMetric(cardTotalDesc, prometheus.GaugeValue, float64(u.Total)*unit, labels...)
		ch <- prometheus.MustNewConstMetric(cardAllocDesc, prometheus.GaugeValue, float64(u.Allocated)*unit, labels...)
		h := 0.0
		if u.Healthy {
			h = 1
		}
		ch <- prometheus.MustNewConstMetric(cardHealthDesc, prometheus.GaugeValue, h, labels...)
	}
}
