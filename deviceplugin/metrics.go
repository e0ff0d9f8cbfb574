package deviceplugin

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/nvml"
)

const namespace = "gpupack_device_plugin"

// pluginMetrics are the plugin's counters, on a registry of its own that
// also samples the cards at every scrape.
type pluginMetrics struct {
	registry      *prometheus.Registry
	allocations   *prometheus.CounterVec
	evictions     prometheus.Counter
	registrations prometheus.Counter
}

func newMetrics(p *Plugin) *pluginMetrics {
	// The counters name the node, as the per-card series do, so that a
	// dashboard filters them by node without relabelling.
	node := prometheus.Labels{"node": p.opts.NodeName}
	m := &pluginMetrics{
		registry: prometheus.NewRegistry(),
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "allocations_total",
			Help:        "Containers Allocate was asked for, by result (allocated, refused).",
			ConstLabels: node,
		}, []string{"result"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "evictions_total",
			Help:        "Pods evicted for holding more GPU memory than their share for longer than the grace period.",
			ConstLabels: node,
		}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "registrations_total",
			Help:        "Successful registrations with the kubelet (one at start, one per kubelet restart).",
			ConstLabels: node,
		}),
	}
	m.registry.MustRegister(m.allocations, m.evictions, m.registrations, &usageCollector{p: p},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Per-card series carry our labels (node, uuid, index, model: the
// extender's per-card series and kubectl inspect read these) and, with the
// same values, dcgm-exporter's (gpu, UUID, pci_bus_id, device, modelName,
// hostname), so that a DCGM series joins ours without relabelling:
// DCGM_FI_DEV_FB_USED * on(UUID) group_left gpupack_..._allocated_bytes.
// Per-container series carry dcgm-exporter's Kubernetes-mode names
// (namespace, pod, container) and the card's uuid, UUID and gpu.
var (
	cardLabels      = []string{"node", "uuid", "index", "model", "gpu", "UUID", "pci_bus_id", "device", "modelName", "hostname"}
	containerLabels = []string{"node", "namespace", "pod", "container", "uuid", "UUID", "gpu"}

	descCardTotal     = desc("card_memory_total_bytes", "Memory of the card.", cardLabels)
	descCardUsed      = desc("card_memory_used_bytes", "Memory in use on the card, as NVML reports it.", cardLabels)
	descCardAllocated = desc("card_memory_allocated_bytes", "Memory granted on the card to the node's pods that have not ended.", cardLabels)
	descCardUnattrib  = desc("card_memory_unattributed_bytes", "Memory on the card held by processes in no pod of this node.", cardLabels)
	descCardUtil      = desc("card_utilization_ratio", "Share of the last sample period in which the card's SMs were busy, 0..1.", cardLabels)
	descCardMemUtil   = desc("card_memory_utilization_ratio", "Share of the last sample period in which the card's memory controller was busy, 0..1.", cardLabels)
	descCardHealthy   = desc("card_healthy", "1 while the card is healthy, 0 after a critical Xid, a double-bit ECC error or when it is lost.", cardLabels)
	descCardUp        = desc("card_sample_ok", "1 when the card's live state could be read at this scrape.", cardLabels)
	descPodUsed       = desc("pod_memory_used_bytes", "Memory a GPU container's processes hold on one of its cards.", containerLabels)
	descPodLimit      = desc("pod_memory_limit_bytes", "A GPU container's share of one of its cards.", containerLabels)
	descPodOver       = desc("pod_memory_over_share", "1 while a GPU container holds more than its share of the card.", containerLabels)
)

// cardLabelValues are the values of cardLabels for card d of node. The
// device label is dcgm-exporter's: "nvidia" and the GPU's index (not the
// minor number), as it writes it.
func cardLabelValues(node string, d nvml.Device) []string {
	idx := strconv.Itoa(d.Index)
	return []string{node, d.UUID, idx, d.Model, idx, d.UUID, d.PCIBusID, "nvidia" + idx, d.Model, node}
}

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

// usageCollector samples the cards at every scrape, so a container over its
// share shows at once.
type usageCollector struct{ p *Plugin }

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCardTotal, descCardUsed, descCardAllocated, descCardUnattrib, descCardUtil,
		descCardMemUtil, descCardHealthy, descCardUp, descPodUsed, descPodLimit, descPodOver} {
		ch <- d
	}
}

const mib = 1 << 20

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	u, err := c.p.Usage(ctx)
	if err != nil {
		klog.Background().Error(err, "Collecting GPU metrics")
		return
	}
	node := c.p.opts.NodeName
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, cu := range u.Cards {
		l := cardLabelValues(node, cu.Device)
		gauge(descCardTotal, float64(cu.MemoryMiB*mib), l...)
		gauge(descCardAllocated, float64(cu.AllocatedMiB*mib), l...)
		gauge(descCardHealthy, b2f(cu.Healthy), l...)
		gauge(descCardUp, b2f(cu.Err == nil), l...)
		if cu.Err != nil {
			continue
		}
		gauge(descCardUsed, float64(cu.Sample.Memory.UsedMiB*mib), l...)
		gauge(descCardUnattrib, float64(cu.UnattributedMiB*mib), l...)
		gauge(descCardUtil, float64(cu.Sample.Utilization.GPU)/100, l...)
		gauge(descCardMemUtil, float64(cu.Sample.Utilization.Memory)/100, l...)
	}
	for _, cu := range u.Containers {
		l := []string{node, cu.Pod.Namespace, cu.Pod.Name, cu.Container, cu.UUID, cu.UUID, strconv.Itoa(cu.Card)}
		gauge(descPodUsed, float64(cu.UsedMiB*mib), l...)
		gauge(descPodLimit, float64(cu.LimitMiB*mib), l...)
		gauge(descPodOver, b2f(cu.Over()), l...)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
