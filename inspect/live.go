package inspect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// LiveSource reads what is measured now on a node's cards, by card index.
type LiveSource interface {
	Live(ctx context.Context, node string) (map[int]Live, error)
}

// DevicePluginSelector selects the gpupack device plugin's pods (the
// chart's label).
const DevicePluginSelector = "app.kubernetes.io/name=gpupack-device-plugin"

// DefaultMetricsPort is the device plugin's --metrics-port default.
const DefaultMetricsPort = 9445

// ErrNoDevicePlugin is returned for a node where no running gpupack device
// plugin pod serves metrics.
var ErrNoDevicePlugin = errors.New("no gpupack device plugin pod serves metrics on the node")

// PluginMetrics reads the device plugin's /metrics through the API
// server's pod proxy (the caller needs get on pods/proxy).
type PluginMetrics struct {
	Client kubernetes.Interface
	// Selector finds the device plugin's pods (DevicePluginSelector when
	// empty).
	Selector string
}

var _ LiveSource = (*PluginMetrics)(nil)

// Live implements LiveSource.
func (m *PluginMetrics) Live(ctx context.Context, node string) (map[int]Live, error) {
	sel := m.Selector
	if sel == "" {
		sel = DevicePluginSelector
	}
	pods, err := m.Client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		LabelSelector: sel,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("finding the device plugin on %s: %w", node, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Spec.NodeName != node || pod.Status.Phase != corev1.PodRunning {
			continue
		}
		port := metricsPort(pod)
		if port == 0 {
			continue
		}
		body, err := m.Client.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(port), "metrics", nil).DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the metrics of %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		live, err := ParseMetrics(body)
		if err != nil {
			return nil, fmt.Errorf("reading the metrics of %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		return live, nil
	}
	return nil, fmt.Errorf("%w (%s, selector %s)", ErrNoDevicePlugin, node, sel)
}

// metricsPort is the container port named "metrics", else the default
// when the pod declares no port at all.
func metricsPort(pod *corev1.Pod) int {
	declared := false
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			declared = true
			if p.Name == "metrics" {
				return int(p.ContainerPort)
			}
		}
	}
	if declared {
		return 0
	}
	return DefaultMetricsPort
}

// The device plugin's per-card series that inspect shows.
const (
	metricUtilization = "gpupack_device_plugin_card_utilization_ratio"
	metricUsed        = "gpupack_device_plugin_card_memory_used_bytes"
	metricSampleOK    = "gpupack_device_plugin_card_sample_ok"
)

// ParseMetrics reads the per-card utilisation and memory in use from the
// device plugin's Prometheus text exposition (format 0.0.4, as promhttp
// serves it without content negotiation). A card whose live state could not
// be read at the scrape (card_sample_ok 0), or that reports a value that is
// not a finite number (NaN, ±Inf), is left out; a series without an integer
// index label is ignored. A body that is not valid text exposition is an
// error, not an empty view.
func ParseMetrics(text []byte) (map[int]Live, error) {
	// The format ends every line with '\n'; a body cut after its last
	// sample is still read, as before.
	if n := len(text); n > 0 && text[n-1] != '\n' {
		text = append(text[:n:n], '\n')
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	out := map[int]Live{}
	// failed: the last card_sample_ok says 0; unmeasured: a value is not
	// a finite number.
	failed, unmeasured := map[int]bool{}, map[int]bool{}
	for _, name := range []string{metricUtilization, metricUsed, metricSampleOK} {
		mf := families[name]
		for _, m := range mf.GetMetric() {
			idx, ok := cardIndex(m)
			if !ok {
				continue
			}
			v, err := sampleValue(mf, m)
			if err != nil {
				return nil, fmt.Errorf("metrics: %w", err)
			}
			l := out[idx]
			switch name {
			case metricUtilization:
				l.Utilization = v
			case metricUsed:
				l.UsedBytes = int64(v)
			case metricSampleOK:
				failed[idx] = v == 0
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				unmeasured[idx] = true
			}
			out[idx] = l
		}
	}
	for idx := range out {
		if failed[idx] || unmeasured[idx] {
			delete(out, idx)
		}
	}
	return out, nil
}

// cardIndex is the series' index label, when it is an integer.
func cardIndex(m *dto.Metric) (int, bool) {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == "index" {
			idx, err := strconv.Atoi(lp.GetValue())
			return idx, err == nil
		}
	}
	return 0, false
}

// sampleValue is the value of a gauge, counter or untyped sample (the text
// format makes a series without a TYPE line untyped).
func sampleValue(mf *dto.MetricFamily, m *dto.Metric) (float64, error) {
	switch mf.GetType() {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), nil
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue(), nil
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), nil
	default:
		return 0, fmt.Errorf("%s is a %s; want a gauge", mf.GetName(), strings.ToLower(mf.GetType().String()))
	}
}

// AddLive fills in each card's live state from src, node by node; a node
// where src fails keeps no live state, and the error is returned with the
// others (the view stays usable).
func (c *Cluster) AddLive(ctx context.Context, src LiveSource) []error {
	var errs []error
	for i := range c.Nodes {
		n := &c.Nodes[i]
		if len(n.Cards) == 0 {
			continue
		}
		live, err := src.Live(ctx, n.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for j := range n.Cards {
			if l, ok := live[n.Cards[j].Index]; ok {
				n.Cards[j].Live = &l
			}
		}
	}
	return errs
}
