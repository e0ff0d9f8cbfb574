package monitoring

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin"
	"github.com/gpupack/gpupack/extender"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/nvml"
)

const dashboardFile = "../../deploy/chart/gpupack/dashboards/gpupack.json"

// dcgmMetrics are the dcgm-exporter series the dashboard may name: it joins
// them on UUID to ours rather than copy them (gpupack exports no
// temperature or power). The reason is the panel that uses each.
var dcgmMetrics = map[string]string{
	"DCGM_FI_DEV_GPU_TEMP": "the GPU temperature panel, joined on(UUID) to gpupack's node and card labels",
}

// dcgmLabels are the labels dcgm-exporter puts on a GPU's series
// (Hostname before its rename to hostname; pod, namespace and container
// in Kubernetes mode).
var dcgmLabels = []string{"gpu", "UUID", "pci_bus_id", "device", "modelName", "hostname", "Hostname",
	"DCGM_FI_DRIVER_VERSION", "pod", "namespace", "container"}

// exported maps each sample name gpupack's components export to the label
// names its series carry.
type exported map[string]map[string]bool

// TestDashboardQueriesUseExportedMetrics: every PromQL expression of the
// dashboard (panel targets and variable queries) parses, and names only
// metrics and labels the extender's and the device plugin's registries
// serve, once driven until each of their families has a series.
func TestDashboardQueriesUseExportedMetrics(t *testing.T) {
	ex := exported{}
	ex.add(t, extenderMetrics(t))
	dp, _ := devicePluginMetrics(t)
	ex.add(t, dp)
	for name, reason := range dcgmMetrics {
		if reason == "" {
			t.Errorf("%s is allowed without a reason", name)
		}
		ex[name] = set(dcgmLabels...)
	}

	d := loadDashboard(t)
	queries := d.queries()
	if len(queries) < 20 {
		t.Fatalf("found %d queries in the dashboard; want its panels' and variables' (is the model read right?)", len(queries))
	}
	for _, q := range queries {
		for _, err := range ex.check(q) {
			t.Errorf("%s: %v\n\t%s", q.where, err, q.expr)
		}
	}
	for _, err := range d.datasourceErrors() {
		t.Error(err)
	}
}

// TestDashboardCheckFails: the check refuses what a typo or a renamed
// metric would leave in a panel.
func TestDashboardCheckFails(t *testing.T) {
	ex := exported{
		"gpupack_device_plugin_card_memory_used_bytes":     set("node", "uuid", "index", "UUID", "gpu"),
		"gpupack_extender_request_duration_seconds_bucket": set("verb", "le"),
		"gpupack_extender_binds_total":                     set("result"),
		"DCGM_FI_DEV_GPU_TEMP":                             set(dcgmLabels...),
	}
	used := "gpupack_device_plugin_card_memory_used_bytes"
	tests := []struct {
		name, expr, legend string
		// want: what the error says; "" for none.
		want string
	}{
		{name: "good", expr: `sum by (node) (` + used + `{node=~"$node", index=~"$card"})`, legend: "{{node}}"},
		{name: "good histogram", expr: `histogram_quantile(0.99, sum by (le, verb) (rate(gpupack_extender_request_duration_seconds_bucket[$__rate_interval])))`, legend: "{{verb}}"},
		{name: "good join", expr: `DCGM_FI_DEV_GPU_TEMP * on(UUID) group_left(node, index) (0 * ` + used + ` + 1)`, legend: "{{node}}/{{index}}"},
		{name: "misspelt metric", expr: `gpupack_device_plugin_card_memory_usd_bytes`, want: `gpupack_device_plugin_card_memory_usd_bytes is exported by no gpupack component`},
		{name: "metric in a matcher", expr: `{__name__="gpupack_device_plugin_card_memory_usd_bytes"}`, want: "is exported by no gpupack component"},
		{name: "DCGM metric not allowed", expr: `DCGM_FI_DEV_POWER_USAGE`, want: "DCGM_FI_DEV_POWER_USAGE is exported by no gpupack component"},
		{name: "misspelt matcher label", expr: used + `{nod=~"$node"}`, want: `label "nod" is not on ` + used},
		{name: "label of another metric", expr: `gpupack_extender_binds_total{verb="bind"}`, want: `label "verb" is not on gpupack_extender_binds_total`},
		{name: "misspelt by label", expr: `sum by (nodes) (` + used + `)`, want: `by (nodes): "nodes" is not a label of its operand`},
		{name: "by label dropped by an inner sum", expr: `max by (uuid) (sum by (node) (` + used + `))`, want: `"uuid" is not a label of its operand`},
		{name: "without label", expr: `sum without (reason) (gpupack_extender_binds_total)`, want: `"reason" is not a label of its operand`},
		{name: "misspelt on label", expr: `DCGM_FI_DEV_GPU_TEMP * on(uuid) group_left(node) ` + used, want: `on(uuid): "uuid" is not a label of the left-hand side`},
		{name: "group_left label missing", expr: `DCGM_FI_DEV_GPU_TEMP * on(UUID) group_left(model) ` + used, want: `group_left(model): "model" is not a label of the right-hand side`},
		{name: "histogram quantile without le", expr: `histogram_quantile(0.9, sum by (verb) (rate(gpupack_extender_request_duration_seconds_bucket[5m])))`, want: `histogram_quantile over series without le`},
		{name: "legend label missing", expr: `sum by (node) (` + used + `)`, legend: "{{node}}/{{index}}", want: `legend names "index"`},
		{name: "not PromQL", expr: `sum by (node) (` + used, want: "parse error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := ex.check(query{where: tc.name, expr: tc.expr, legend: tc.legend})
			if tc.want == "" {
				if len(errs) > 0 {
					t.Errorf("errors %v; want none", errs)
				}
				return
			}
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
				t.Errorf("errors %v; want one saying %q", errs, tc.want)
			}
		})
	}

	t.Run("hard-coded data source", func(t *testing.T) {
		d := dashboard{Panels: []panel{{Title: "p", Datasource: &datasource{UID: "P1809F7CD0C75ACF3"}, Targets: []target{{Expr: used}}}}}
		if errs := d.datasourceErrors(); len(errs) == 0 || !strings.Contains(errs[0].Error(), "P1809F7CD0C75ACF3") {
			t.Errorf("errors %v; want one naming the hard-coded uid", errs)
		}
	})
}

// add records the sample names and label names of the families.
func (ex exported) add(t *testing.T, families map[string]*dto.MetricFamily) {
	t.Helper()
	for name, mf := range families {
		if len(mf.GetMetric()) == 0 {
			t.Errorf("family %s has no series", name)
		}
		for _, m := range mf.GetMetric() {
			var l []string
			for _, lp := range m.GetLabel() {
				l = append(l, lp.GetName())
			}
			for sample, extra := range sampleNames(mf) {
				s := ex[sample]
				if s == nil {
					s = map[string]bool{}
					ex[sample] = s
				}
				for _, n := range append(l, extra...) {
					s[n] = true
				}
			}
		}
	}
}

// sampleNames are the series names a family is stored under, with the
// labels each adds (a histogram's le, a summary's quantile).
func sampleNames(mf *dto.MetricFamily) map[string][]string {
	n := mf.GetName()
	switch mf.GetType() {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return map[string][]string{n + "_bucket": {"le"}, n + "_sum": nil, n + "_count": nil}
	case dto.MetricType_SUMMARY:
		return map[string][]string{n: {"quantile"}, n + "_sum": nil, n + "_count": nil}
	}
	return map[string][]string{n: nil}
}

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	where, expr, legend string
}

// check parses q and returns what it names that is not exported.
func (ex exported) check(q query) []error {
	// Grafana's interval variables are durations to the parser; $node and
	// the like sit inside strings, which the parser takes as they are.
	expr := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h").Replace(q.expr)
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return []error{err}
	}
	c := &checker{ex: ex}
	out := c.labels(e)
	if q.legend != "" && out != nil {
		for _, m := range legendLabel.FindAllStringSubmatch(q.legend, -1) {
			if !out[m[1]] {
				c.errorf("legend names %q, which the query's series do not carry (they carry %s)", m[1], names(out))
			}
		}
	}
	return c.errs
}

var legendLabel = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

type checker struct {
	ex   exported
	errs []error
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// labels checks e and returns the label names of its result's series (nil
// for a scalar or a string).
func (c *checker) labels(e parser.Expr) map[string]bool {
	switch e := e.(type) {
	case *parser.VectorSelector:
		return c.selector(e)
	case *parser.MatrixSelector:
		return c.labels(e.VectorSelector)
	case *parser.SubqueryExpr:
		return c.labels(e.Expr)
	case *parser.ParenExpr:
		return c.labels(e.Expr)
	case *parser.UnaryExpr:
		return c.labels(e.Expr)
	case *parser.StepInvariantExpr:
		return c.labels(e.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return nil
	case *parser.AggregateExpr:
		if e.Param != nil {
			c.labels(e.Param)
		}
		in := c.labels(e.Expr)
		how := "by"
		if e.Without {
			how = "without"
		}
		for _, l := range e.Grouping {
			if !in[l] {
				c.errorf("%s %s (%s): %q is not a label of its operand (it has %s)", e.Op, how, strings.Join(e.Grouping, ", "), l, names(in))
			}
		}
		switch {
		case e.Op == parser.TOPK || e.Op == parser.BOTTOMK || e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO:
			return in
		case e.Without:
			out := clone(in)
			for _, l := range e.Grouping {
				delete(out, l)
			}
			return out
		}
		out := set(e.Grouping...)
		if e.Op == parser.COUNT_VALUES {
			if s, ok := e.Param.(*parser.StringLiteral); ok {
				out[s.Val] = true
			}
		}
		return out
	case *parser.BinaryExpr:
		return c.binary(e)
	case *parser.Call:
		var in map[string]bool
		for _, a := range e.Args {
			if l := c.labels(a); l != nil && in == nil {
				in = l
			}
		}
		switch e.Func.Name {
		case "histogram_quantile":
			if in != nil && !in["le"] {
				c.errorf("histogram_quantile over series without le (they have %s)", names(in))
			}
			out := clone(in)
			delete(out, "le")
			return out
		case "vector":
			return map[string]bool{}
		case "scalar", "time", "pi":
			return nil
		case "label_replace", "label_join":
			out := clone(in)
			if s, ok := e.Args[1].(*parser.StringLiteral); ok {
				out[s.Val] = true
			}
			return out
		}
		return in
	}
	c.errorf("cannot check %T %s", e, e)
	return nil
}

func (c *checker) selector(vs *parser.VectorSelector) map[string]bool {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	have, ok := c.ex[name]
	if !ok {
		c.errorf("metric %s is exported by no gpupack component (nor on the list of DCGM series the dashboard may join)", name)
		return nil
	}
	for _, m := range vs.LabelMatchers {
		if m.Name != model.MetricNameLabel && !have[m.Name] {
			c.errorf("label %q is not on %s (it has %s)", m.Name, name, names(have))
		}
	}
	return clone(have)
}

func (c *checker) binary(e *parser.BinaryExpr) map[string]bool {
	lhs, rhs := c.labels(e.LHS), c.labels(e.RHS)
	if lhs == nil || rhs == nil {
		// A scalar on one side: the vector's labels.
		if lhs == nil {
			return rhs
		}
		return lhs
	}
	vm := e.VectorMatching
	if vm == nil {
		return lhs
	}
	how := "ignoring"
	if vm.On {
		how = "on"
	}
	for _, l := range vm.MatchingLabels {
		if vm.On && !lhs[l] {
			c.errorf("%s(%s): %q is not a label of the left-hand side (it has %s)", how, strings.Join(vm.MatchingLabels, ", "), l, names(lhs))
		}
		if vm.On && !rhs[l] {
			c.errorf("%s(%s): %q is not a label of the right-hand side (it has %s)", how, strings.Join(vm.MatchingLabels, ", "), l, names(rhs))
		}
		if !vm.On && !lhs[l] && !rhs[l] {
			c.errorf("%s(%s): %q is a label of neither side", how, strings.Join(vm.MatchingLabels, ", "), l)
		}
	}
	switch {
	case e.Op == parser.LOR:
		out := clone(lhs)
		for l := range rhs {
			out[l] = true
		}
		return out
	case e.Op == parser.LAND || e.Op == parser.LUNLESS:
		return lhs
	case vm.Card == parser.CardManyToOne || vm.Card == parser.CardOneToMany:
		many, one, side, group := lhs, rhs, "right", "group_left"
		if vm.Card == parser.CardOneToMany {
			many, one, side, group = rhs, lhs, "left", "group_right"
		}
		out := clone(many)
		for _, l := range vm.Include {
			if !one[l] {
				c.errorf("%s(%s): %q is not a label of the %s-hand side (it has %s)", group, strings.Join(vm.Include, ", "), l, side, names(one))
			}
			out[l] = true
		}
		return out
	case vm.On:
		// One-to-one on(...): the result keeps the matching labels only.
		out := map[string]bool{}
		for _, l := range vm.MatchingLabels {
			if lhs[l] {
				out[l] = true
			}
		}
		return out
	}
	out := clone(lhs)
	for _, l := range vm.MatchingLabels {
		delete(out, l)
	}
	return out
}

func set(l ...string) map[string]bool {
	out := map[string]bool{}
	for _, s := range l {
		out[s] = true
	}
	return out
}

func clone(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func names(m map[string]bool) string {
	var out []string
	for k := range m {
		if k != model.MetricNameLabel {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// The parts of Grafana's dashboard JSON model the check reads.
type (
	dashboard struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []variable `json:"list"`
		} `json:"templating"`
	}
	panel struct {
		Title      string      `json:"title"`
		Type       string      `json:"type"`
		Datasource *datasource `json:"datasource"`
		Targets    []target    `json:"targets"`
		Panels     []panel     `json:"panels"`
	}
	target struct {
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat"`
		Datasource   *datasource `json:"datasource"`
	}
	datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	variable struct {
		Name       string          `json:"name"`
		Type       string          `json:"type"`
		Datasource *datasource     `json:"datasource"`
		Query      json.RawMessage `json:"query"`
	}
)

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d := &dashboard{}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// panels are the dashboard's panels, those in collapsed rows included.
func (d *dashboard) panels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// labelValues is Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)

// queries are the PromQL of every panel target, and of every query
// variable: label_values(selector, label) is checked as the selector,
// with label as the one legend label it must carry.
func (d *dashboard) queries() []query {
	var out []query
	for _, p := range d.panels() {
		for i, tg := range p.Targets {
			out = append(out, query{where: fmt.Sprintf("panel %q target %d", p.Title, i), expr: tg.Expr, legend: tg.LegendFormat})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // the older model: a plain string
		}
		where := fmt.Sprintf("variable %q", v.Name)
		if m := labelValues.FindStringSubmatch(strings.TrimSpace(q.Query)); m != nil {
			out = append(out, query{where: where, expr: m[1], legend: "{{" + m[2] + "}}"})
		} else {
			out = append(out, query{where: where, expr: q.Query})
		}
	}
	return out
}

// datasourceErrors: every panel, target and query variable takes its data
// source from the ${datasource} variable, never a hard-coded uid.
func (d *dashboard) datasourceErrors() []error {
	var errs []error
	check := func(where string, ds *datasource) {
		if ds == nil || ds.UID != "${datasource}" {
			errs = append(errs, fmt.Errorf("%s: data source %+v; want the ${datasource} variable, not a hard-coded uid", where, ds))
		}
	}
	for _, p := range d.panels() {
		if p.Type == "row" {
			continue
		}
		check(fmt.Sprintf("panel %q", p.Title), p.Datasource)
		for i, tg := range p.Targets {
			check(fmt.Sprintf("panel %q target %d", p.Title, i), tg.Datasource)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			check(fmt.Sprintf("variable %q", v.Name), v.Datasource)
		}
	}
	return errs
}

// scrape reads the text exposition an HTTP handler serves at /metrics.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	text := expfmt.NewTextParser(model.UTF8Validation)
	families, err := text.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// extenderMetrics runs the extender over a fake clientset with one GPU
// node, rejects a pod too big for it and fails a bind (so the counters by
// reason and result have a series), and scrapes its probe handler.
func extenderMetrics(t *testing.T) map[string]*dto.MetricFamily {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	key := []byte("monitoring-test-signing-key-0123456789")
	big := fixture.MakePod().Name("big").UID("uid-big").GPUMem(200).Obj()
	client := fake.NewClientset(fixture.MakeNode("node-a").Cards("NVIDIA A100-SXM4-80GB", 81920, 81920).Obj(), big)
	cfg := config.Default()
	pol, err := policy.Get(policy.Name(cfg.Policy))
	if err != nil {
		t.Fatal(err)
	}
	unit, err := contract.ParseUnit(cfg.MemoryUnit)
	if err != nil {
		t.Fatal(err)
	}
	c := cache.New(cache.Options{Unit: unit, SigningKey: key, Policy: pol})
	factory := informers.NewSharedInformerFactory(client, 0)
	synced, err := c.Watch(factory)
	if err != nil {
		t.Fatal(err)
	}
	lister := factory.Core().V1().Pods().Lister()
	factory.Start(ctx.Done())
	defer func() {
		cancel()
		factory.Shutdown()
	}()
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		t.Fatal("informers did not sync")
	}
	srv, err := extender.NewServer(cfg, extender.Deps{Client: client, Pods: lister, Cache: c, Key: key, Ready: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(srv.Handler())
	defer api.Close()
	nodes := []string{"node-a"}
	post(t, api.URL+extender.Prefix+"/filter", extenderv1.ExtenderArgs{Pod: big, NodeNames: &nodes})
	post(t, api.URL+extender.Prefix+"/bind", extenderv1.ExtenderBindingArgs{PodName: "gone", PodNamespace: "default", PodUID: "uid-gone", Node: "node-a"})
	return scrape(t, srv.ProbeHandler())
}

func post(t *testing.T, url string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// pods is the device plugin's view of its node's pods.
type pods []*corev1.Pod

func (p pods) Cached() ([]*corev1.Pod, error)              { return p, nil }
func (p pods) Live(context.Context) ([]*corev1.Pod, error) { return p, nil }

var _ deviceplugin.PodSource = pods(nil)

// devicePluginMetrics runs the device plugin over the simulated NVML with
// a pod granted a share of card 0 (so the per-container series exist),
// refuses an allocation nobody scheduled (so allocations_total has a
// series), and scrapes its status handler. It returns the cards as NVML
// describes them too.
func devicePluginMetrics(t *testing.T) (map[string]*dto.MetricFamily, []nvml.Device) {
	_, ctx := ktesting.NewTestContext(t)
	dir := t.TempDir()
	s, err := mock.NewState(mock.Config{Node: "node-a", Preset: "mixed"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := mock.Create(filepath.Join(dir, "nvml.json"), s)
	if err != nil {
		t.Fatal(err)
	}
	lib, err := nvml.New(mock.New(st))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lib.Shutdown() })
	pod := fixture.MakePod().Name("p").UID("uid-p").GPUMem(2).Node("node-a").
		Annotation(contract.AnnotationAllocation, `{"0":{"0":2}}`).Obj()
	client := fake.NewClientset(fixture.MakeNode("node-a").Obj(), pod)
	p, err := deviceplugin.New(deviceplugin.Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB, ProcRoot: dir}, lib, pods{pod}, client)
	if err != nil {
		t.Fatal(err)
	}
	uuid := p.Inventory().Cards[0].UUID
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = p.Allocate(actx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{uuid + "-_-0"}}}})
	if err == nil {
		t.Log("the allocation was granted; either result gives allocations_total a series")
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Allocate: %v", err)
	}
	devs, err := lib.Devices()
	if err != nil {
		t.Fatal(err)
	}
	return scrape(t, p.StatusHandler()), devs
}
