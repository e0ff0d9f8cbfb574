package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// TestDeployMonitoring renders the chart's monitoring objects: a headless
// Service per component that selects exactly that component's pods and
// names a port its container serves; ServiceMonitors, on request, that
// select those Services and scrape that port; and a clear refusal when
// ServiceMonitors are asked for where their CRD is not served.
func TestDeployMonitoring(t *testing.T) {
	workloads := map[string]string{"gpupack-scheduler": "Deployment", "gpupack-device-plugin": "DaemonSet"}
	containers := map[string]string{"gpupack-scheduler": "gpupack-extender", "gpupack-device-plugin": "device-plugin"}

	t.Run("services", func(t *testing.T) {
		objs := renderChart(t, "kube-system")
		for component, kind := range workloads {
			svc := mustFindObject(t, objs, "Service", component+"-metrics")
			if ip, _, _ := unstructured.NestedString(svc.Object, "spec", "clusterIP"); ip != "None" {
				t.Errorf("%s: clusterIP %q, want headless", svc.GetName(), ip)
			}
			sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
			for name, k := range workloads {
				w := mustFindObject(t, objs, k, name)
				podLabels, _, _ := unstructured.NestedStringMap(w.Object, "spec", "template", "metadata", "labels")
				if got, want := labels.SelectorFromSet(sel).Matches(labels.Set(podLabels)), name == component; got != want {
					t.Errorf("Service %s selects the pods of %s %s: %v, want %v", svc.GetName(), kind, name, got, want)
				}
			}
			ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
			if len(ports) != 1 {
				t.Fatalf("%s: ports %v", svc.GetName(), ports)
			}
			target := ports[0].(map[string]any)["targetPort"]
			named := false
			for _, p := range templateContainer(t, mustFindObject(t, objs, kind, component), containers[component]).Ports {
				named = named || p.Name == target
			}
			if !named {
				t.Errorf("%s: targetPort %v is no port of container %s", svc.GetName(), target, containers[component])
			}
		}
		applyObjects(t, objs, true)
	})

	t.Run("service-monitors", func(t *testing.T) {
		objs := decodeManifests(t, runHelm(t, "template", "gpupack", chartDir, "--namespace", "kube-system",
			"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
			"--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.serviceMonitor.labels.release=prometheus"))
		for component := range workloads {
			sm := mustFindObject(t, objs, "ServiceMonitor", component+"-metrics")
			svc := mustFindObject(t, objs, "Service", component+"-metrics")
			if sm.GetLabels()["release"] != "prometheus" {
				t.Errorf("%s: labels %v lack release=prometheus", sm.GetName(), sm.GetLabels())
			}
			match, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
			if !labels.SelectorFromSet(match).Matches(labels.Set(svc.GetLabels())) {
				t.Errorf("%s selects %v; the Service has %v", sm.GetName(), match, svc.GetLabels())
			}
			endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
			if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != ports[0].(map[string]any)["name"] || endpoints[0].(map[string]any)["path"] != "/metrics" {
				t.Errorf("%s endpoints %v; the Service's ports %v", sm.GetName(), endpoints, ports)
			}
			// The device plugin's per-container series carry the
			// workload's namespace, pod and container: Prometheus must
			// keep them rather than rename them exported_*.
			if honor, _ := endpoints[0].(map[string]any)["honorLabels"].(bool); honor != (component == "gpupack-device-plugin") {
				t.Errorf("%s: honorLabels %v", sm.GetName(), honor)
			}
		}
	})

	t.Run("service-monitors-without-their-crd", func(t *testing.T) {
		out, err := exec.Command(helmScript, "template", "gpupack", chartDir, "--set", "monitoring.serviceMonitor.enabled=true").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "needs the Prometheus Operator's ServiceMonitor CRD") {
			t.Errorf("helm template: %v\n%s", err, out)
		}
	})

	t.Run("grafana-dashboard", func(t *testing.T) {
		file, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "gpupack.json"))
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(file) {
			t.Fatal("dashboards/gpupack.json is not valid JSON")
		}
		tests := []struct {
			name string
			set  []string
			// want: the ConfigMap's namespace, sidecar label and
			// annotations; empty namespace: no ConfigMap.
			namespace, label, value string
			annotations             map[string]string
			apply                   bool
		}{
			{name: "off by default"},
			{name: "on, in the release's namespace", set: []string{"monitoring.grafanaDashboard.enabled=true"},
				namespace: "kube-system", label: "grafana_dashboard", value: "1", apply: true},
			{name: "on, where the sidecar looks, with its folder", set: []string{"monitoring.grafanaDashboard.enabled=true",
				"monitoring.grafanaDashboard.namespace=monitoring", "monitoring.grafanaDashboard.label=grafana.example.com/dashboard",
				"monitoring.grafanaDashboard.labelValue=gpu", "monitoring.grafanaDashboard.annotations.grafana_folder=GPU"},
				namespace: "monitoring", label: "grafana.example.com/dashboard", value: "gpu", annotations: map[string]string{"grafana_folder": "GPU"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				args := []string{"template", "gpupack", chartDir, "--namespace", "kube-system"}
				for _, s := range tc.set {
					args = append(args, "--set", s)
				}
				objs := decodeManifests(t, runHelm(t, args...))
				var cm *unstructured.Unstructured
				for _, o := range objs {
					if o.GetKind() == "ConfigMap" && o.GetName() == "gpupack-dashboard" {
						cm = o
					}
				}
				if tc.namespace == "" {
					if cm != nil {
						t.Fatalf("a dashboard ConfigMap nobody asked for: %v", cm.Object)
					}
					return
				}
				if cm == nil {
					t.Fatal("no ConfigMap gpupack-dashboard")
				}
				if cm.GetNamespace() != tc.namespace || cm.GetLabels()[tc.label] != tc.value {
					t.Errorf("ConfigMap in %q with labels %v; want namespace %q and %s=%q", cm.GetNamespace(), cm.GetLabels(), tc.namespace, tc.label, tc.value)
				}
				if diff := cmp.Diff(tc.annotations, cm.GetAnnotations()); diff != "" {
					t.Errorf("annotations (-want +got):\n%s", diff)
				}
				data, _, _ := unstructured.NestedString(cm.Object, "data", "gpupack.json")
				if !json.Valid([]byte(data)) {
					t.Errorf("the ConfigMap's gpupack.json is not valid JSON:\n%s", data)
				}
				if data != strings.TrimRight(string(file), "\n") {
					t.Errorf("the ConfigMap's gpupack.json differs from dashboards/gpupack.json:\n%s", cmp.Diff(string(file), data))
				}
				if tc.apply {
					applyObjects(t, []*unstructured.Unstructured{cm}, true)
				}
			})
		}
	})

	t.Run("grafana-dashboard-bad-label", func(t *testing.T) {
		out, err := exec.Command(helmScript, "template", "gpupack", chartDir, "--set", "monitoring.grafanaDashboard.enabled=true",
			"--set", "monitoring.grafanaDashboard.label=not a label").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "grafanaDashboard") || !strings.Contains(string(out), "label") {
			t.Errorf("helm template: %v\n%s", err, out)
		}
	})
}
