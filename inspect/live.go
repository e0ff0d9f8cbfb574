package inspect

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
		return ParseMetrics(body)
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
// device plugin's Prometheus text exposition. A card whose live state
// could not be read at the scrape (card_sample_ok 0) is left out.
func ParseMetrics(text []byte) (map[int]Live, error) {
	out := map[int]Live{}
	failed := map[int]bool{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, value, ok := splitSample(line)
		if !ok || (name != metricUtilization && name != metricUsed && name != metricSampleOK) {
			continue
		}
		idx, err := strconv.Atoi(label(labels, "index"))
		if err != nil {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %s: value %q: %w", name, value, err)
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
		out[idx] = l
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	for idx, f := range failed {
		if f {
			delete(out, idx)
		}
	}
	return out, nil
}

// splitSample splits `name{labels} value [timestamp]`.
func splitSample(line string) (name, labels, value string, ok bool) {
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", "", "", false
		}
		name, labels, line = line[:i], line[i+1:j], line[j+1:]
	} else {
		sp := strings.IndexByte(line, ' ')
		if sp < 0 {
			return "", "", "", false
		}
		name, line = line[:sp], line[sp:]
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", "", "", false
	}
	return name, labels, f[0], true
}

// label returns the value of key in `k1="v1",k2="v2"` (escapes kept).
func label(labels, key string) string {
	for labels != "" {
		eq := strings.IndexByte(labels, '=')
		if eq < 0 || eq+1 >= len(labels) || labels[eq+1] != '"' {
			return ""
		}
		k := strings.TrimSpace(labels[:eq])
		rest := labels[eq+2:]
		end := 0
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(rest) {
			return ""
		}
		if k == key {
			return rest[:end]
		}
		labels = strings.TrimPrefix(rest[end+1:], ",")
	}
	return ""
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
