package e2e

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/gpupack/gpupack/contract"
	dpconfig "github.com/gpupack/gpupack/deviceplugin/config"
)

// The device plugin's configurations of TestDevicePluginConfig: a node
// labelled "big" simulates eight A100s, any other four T4s, so which file
// the plugin took shows in the cards it publishes on its Node.
var dpConfigSet = []string{
	"devicePlugin.config.configs.default.nvml=mock:t4x4",
	"devicePlugin.config.configs.big.nvml=mock:a100x8",
	"devicePlugin.config.configs.big.usageInterval=2s",
}

// TestDevicePluginConfigChart: without configs the chart passes the
// plugin's settings as flags and renders no ConfigMap; with them it
// renders one file per configuration, each the chart's values overridden
// by its own and accepted by the plugin's strict loader and validation,
// mounts them where --config-dir points, and rolls the pods when one
// changes. Both are applied to the API server (dry run).
func TestDevicePluginConfigChart(t *testing.T) {
	const dsName, cmName = "gpupack-device-plugin", "gpupack-device-plugin-config"
	t.Run("no configs: flags, as before", func(t *testing.T) {
		objs := renderChart(t, "kube-system")
		if o := findObject(objs, "ConfigMap", cmName); o != nil {
			t.Errorf("ConfigMap %s rendered without configs", cmName)
		}
		ds := mustFindObject(t, objs, "DaemonSet", dsName)
		args := templateContainer(t, ds, "device-plugin").Args
		for _, a := range []string{"--usage-interval=5s", "--reconcile-interval=30s", "--health-recovery=5m", "--evict-over-share-after=0s"} {
			if !slices.Contains(args, a) {
				t.Errorf("args %q lack %s", args, a)
			}
		}
		if _, ok := argValue(args, "config-dir"); ok {
			t.Errorf("args %q pass --config-dir without configs", args)
		}
		if _, ok := ds.GetAnnotations()["checksum/config"]; ok || podAnnotation(t, ds, "checksum/config") != "" {
			t.Error("a config checksum without configs")
		}
		applyObjects(t, objs, true)
	})
	t.Run("configs", func(t *testing.T) {
		objs := renderChart(t, "kube-system", append([]string{"devicePlugin.usageInterval=7s", "devicePlugin.ignoredXids={13,79}"}, dpConfigSet...)...)
		cm := mustFindObject(t, objs, "ConfigMap", cmName)
		data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
		if got := slices.Sorted(maps.Keys(data)); !slices.Equal(got, []string{"big.yaml", "default.yaml"}) {
			t.Fatalf("ConfigMap keys %v, want big.yaml, default.yaml", got)
		}
		parsed := map[string]*dpconfig.Config{}
		for k, v := range data {
			c, err := dpconfig.Parse([]byte(v), k)
			if err != nil {
				t.Fatalf("the plugin refuses the chart's %s: %v\n%s", k, err, v)
			}
			dpconfig.SetDefaults(c)
			if errs := dpconfig.Validate(c); len(errs) > 0 {
				t.Fatalf("the plugin refuses the chart's %s: %v\n%s", k, errs.ToAggregate(), v)
			}
			parsed[k] = c
		}
		// default.yaml: the chart's values; big.yaml: its own over them.
		if d := parsed["default.yaml"]; d.NVML != "mock:t4x4" || d.UsageInterval.Duration != 7*time.Second || !slices.Equal(d.IgnoredXids, []uint64{13, 79}) {
			t.Errorf("default.yaml %+v: want the chart's usageInterval 7s and ignoredXids [13 79]", d)
		}
		if b := parsed["big.yaml"]; b.NVML != "mock:a100x8" || b.UsageInterval.Duration != 2*time.Second || !slices.Equal(b.IgnoredXids, []uint64{13, 79}) {
			t.Errorf("big.yaml %+v: want its usageInterval 2s over the chart's", b)
		}
		ds := mustFindObject(t, objs, "DaemonSet", dsName)
		ctr := templateContainer(t, ds, "device-plugin")
		dir, _ := argValue(ctr.Args, "config-dir")
		if label, _ := argValue(ctr.Args, "config-label"); label != contract.LabelDevicePluginConfig {
			t.Errorf("--config-label=%q, want %s", label, contract.LabelDevicePluginConfig)
		}
		if def, _ := argValue(ctr.Args, "config-default"); def != "default" {
			t.Errorf("--config-default=%q", def)
		}
		// The file's settings are not flags (a flag would override them).
		for _, f := range []string{"usage-interval", "reconcile-interval", "health-recovery", "evict-over-share-after", "ignored-xids"} {
			if _, ok := argValue(ctr.Args, f); ok {
				t.Errorf("--%s passed with configs: it would override every file", f)
			}
		}
		mounted := false
		for _, m := range ctr.VolumeMounts {
			mounted = mounted || (m.Name == "config" && m.MountPath == dir && m.ReadOnly)
		}
		vols, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "volumes")
		fromCM := false
		for _, v := range vols {
			name, _, _ := unstructured.NestedString(v.(map[string]any), "configMap", "name")
			fromCM = fromCM || name == cmName
		}
		if dir == "" || !mounted || !fromCM {
			t.Errorf("--config-dir=%q, mounted read-only there: %v, volume from %s: %v", dir, mounted, cmName, fromCM)
		}
		sum := podAnnotation(t, ds, "checksum/config")
		if sum == "" {
			t.Error("no checksum/config on the pods: a changed configuration would not roll them")
		}
		applyObjects(t, objs, true)

		changed := renderChart(t, "kube-system", append([]string{"devicePlugin.usageInterval=7s", "devicePlugin.ignoredXids={13,79}", "devicePlugin.config.configs.big.usageInterval=3s"}, dpConfigSet[:2]...)...)
		if again := podAnnotation(t, mustFindObject(t, changed, "DaemonSet", dsName), "checksum/config"); again == sum {
			t.Errorf("checksum/config %s unchanged after a configuration changed", sum)
		}
	})
	t.Run("a default that is not a config", func(t *testing.T) {
		cmd := exec.Command(helmScript, "template", "gpupack", chartDir, "--set", "devicePlugin.config.configs.big.usageInterval=2s")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `devicePlugin.config.default "default" names none of devicePlugin.config.configs (big)`) {
			t.Errorf("helm template: %v\n%s", err, out)
		}
	})
}

// TestDevicePluginConfig runs our device plugin with the chart's
// arguments and the chart's ConfigMap as files, against the API server,
// for a Node of its own: the Node's label picks the configuration (seen in
// the cards it publishes); a label naming none is refused at start, with
// the node, the label and the names there, and a Warning event; while it
// runs, a label naming none is refused (an event, the plugin runs on), and
// a label naming another configuration makes it exit 0 so that it restarts
// with that one.
func TestDevicePluginConfig(t *testing.T) {
	ctx := context.Background()
	objs := renderChart(t, "kube-system", dpConfigSet...)
	cm := mustFindObject(t, objs, "ConfigMap", "gpupack-device-plugin-config")
	dir := t.TempDir()
	cfgDir := filepath.Join(dir, "config")
	if err := os.Mkdir(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(cfgDir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := buildDevicePlugin(t, dir)

	const node = "config-dp-node"
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{contract.LabelDevicePluginConfig: "huge"}}}
	if _, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting node %s: %v", node, err)
		}
	})
	pluginDir := filepath.Join(dir, "dp")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	args := append(templateContainer(t, mustFindObject(t, objs, "DaemonSet", "gpupack-device-plugin"), "device-plugin").Args,
		"--config-dir="+cfgDir, "--config-poll-interval=500ms",
		"--device-plugin-dir="+pluginDir, "--pod-resources-socket=", "--proc-root=/proc",
		"--metrics-port="+strconv.Itoa(port), "--mock-state="+filepath.Join(dir, "mock", "nvml.json"),
		"--node-name="+node, "--kubeconfig="+local.Kubeconfig)
	setLabel := func(v string) {
		t.Helper()
		patch := `{"metadata":{"labels":{"` + contract.LabelDevicePluginConfig + `":"` + v + `"}}}`
		if _, err := client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cards := func(want int) {
		t.Helper()
		waitFor(t, 60*time.Second, "the plugin to publish "+strconv.Itoa(want)+" cards on "+node, func() (bool, error) {
			got, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			inv, err := contract.ParseInventory(got.Annotations[contract.AnnotationInventory])
			if err != nil {
				return false, nil // not yet published
			}
			return len(inv.Cards) == want, nil
		})
	}
	refusals := func() []corev1.Event {
		t.Helper()
		evs, err := client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node + ",reason=DevicePluginConfigRefused"})
		if err != nil {
			t.Fatal(err)
		}
		return evs.Items
	}

	// A label naming no configuration: refused at start.
	p := startProcess(t, bin, args...)
	err := p.wait(t, 60*time.Second)
	wantMsg := `node ` + node + `: no such device plugin configuration: node label ` + contract.LabelDevicePluginConfig + `="huge" names no file huge.yaml in ` + cfgDir + `; configurations there: big, default`
	if err == nil || !strings.Contains(p.logs(), wantMsg) {
		t.Fatalf("the plugin with a label naming no configuration: exit %v, want an error saying %q:\n%s", err, wantMsg, p.logs())
	}
	if evs := refusals(); len(evs) != 1 || evs[0].Type != corev1.EventTypeWarning || !strings.Contains(evs[0].Message, wantMsg) {
		t.Errorf("events %+v, want one Warning saying %q", evs, wantMsg)
	}

	// The label picks "big": eight A100s.
	setLabel("big")
	p = startProcess(t, bin, args...)
	p.waitOK(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz")
	cards(8)
	if l := p.logs(); !strings.Contains(l, `name="big"`) || !strings.Contains(l, "byLabel=true") {
		t.Errorf("the plugin does not log the configuration it took:\n%s", p.logs())
	}

	// A label naming no configuration while it runs: refused, runs on.
	setLabel("huge")
	waitFor(t, 30*time.Second, "a Warning event refusing the change", func() (bool, error) { return len(refusals()) == 2, nil })
	if evs := refusals(); !slices.ContainsFunc(evs, func(e corev1.Event) bool { return strings.Contains(e.Message, `keeping "big"`) }) {
		t.Errorf("events %+v: none says the plugin keeps big", evs)
	}
	if p.exited() {
		t.Fatalf("the plugin exited on a label naming no configuration:\n%s", p.logs())
	}

	// The label names another configuration: it exits 0, and restarted
	// runs four T4s.
	setLabel("default")
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("the plugin exited with %v on a configuration change, want 0:\n%s", err, p.logs())
	}
	if !strings.Contains(p.logs(), "configuration changed: exiting so that the container restarts with it") {
		t.Errorf("no log line says why the plugin exited:\n%s", p.logs())
	}
	p = startProcess(t, bin, args...)
	p.waitOK(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz")
	cards(4)
}

// buildDevicePlugin builds gpupack-device-plugin into dir.
func buildDevicePlugin(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "gpupack-device-plugin")
	build := exec.Command("go", "build", "-o", bin, "github.com/gpupack/gpupack/cmd/gpupack-device-plugin")
	build.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the device plugin: %v\n%s", err, out)
	}
	return bin
}

// wait waits for the process to exit and returns its status, failing the
// test after timeout.
func (p *testProcess) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("%s still runs after %v:\n%s", p.name, timeout, p.logs())
		return nil
	}
}

// exited reports whether the process has exited.
func (p *testProcess) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// podAnnotation is an annotation of a workload's pod template.
func podAnnotation(t *testing.T, o *unstructured.Unstructured, key string) string {
	t.Helper()
	v, _, err := unstructured.NestedString(o.Object, "spec", "template", "metadata", "annotations", key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
