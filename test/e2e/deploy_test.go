package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	schedscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"
	schedvalidation "k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/test/cluster"
)

// The chart, the static manifests and the pinned helm, from this package's
// folder (go test runs in it).
const (
	helmScript     = "../tools/helm/helm.sh"
	chartDir       = "../../deploy/chart/gpupack"
	staticManifest = "../../deploy/manifests/gpupack.yaml"
	staticValues   = "../../deploy/manifests/values.yaml"
)

// runHelm runs the pinned helm (built into the cache on first use).
func runHelm(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helmScript, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// renderChart renders the chart as `helm install` would against the local
// cluster: its namespace and its Kubernetes version.
func renderChart(t *testing.T, namespace string, set ...string) []*unstructured.Unstructured {
	t.Helper()
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"template", "gpupack", chartDir, "--namespace", namespace, "--kube-version", v.GitVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return decodeManifests(t, runHelm(t, args...))
}

// decodeManifests splits YAML documents into objects (empty ones skipped).
func decodeManifests(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		obj := map[string]any{}
		if err := sigsyaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		if len(obj) > 0 {
			out = append(out, &unstructured.Unstructured{Object: obj})
		}
	}
}

// apiWarnings collects the API server's apiWarnings (deprecated APIs, dropped
// fields): the manifests must draw none.
type apiWarnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *apiWarnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

// applyObjects applies objects with server-side apply and strict field
// validation, as a dry run (nothing is stored) unless dryRun is false. It
// fails the test on any error or warning.
func applyObjects(t *testing.T, objs []*unstructured.Unstructured, dryRun bool) {
	t.Helper()
	for _, err := range applyErrors(t, objs, dryRun) {
		t.Error(err)
	}
}

// applyErrors applies objects as applyObjects does and returns the API server's
// errors and apiWarnings.
func applyErrors(t *testing.T, objs []*unstructured.Unstructured, dryRun bool) []error {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", local.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	w := &apiWarnings{}
	rc.WarningHandler = w
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	force := true
	opts := metav1.PatchOptions{FieldManager: "gpupack-e2e", Force: &force, FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var errs []error
	for _, o := range objs {
		what := o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if o.GetNamespace() == "" {
				errs = append(errs, fmt.Errorf("%s: a namespaced object without a namespace", what))
				continue
			}
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ri.Patch(context.Background(), o.GetName(), types.ApplyPatchType, data, opts); err != nil {
			errs = append(errs, fmt.Errorf("applying %s (dry run %v): %w", what, dryRun, err))
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, msg := range w.msgs {
		errs = append(errs, fmt.Errorf("API server warning: %s", msg))
	}
	return errs
}

func findObject(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	return nil
}

func mustFindObject(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := findObject(objs, kind, name)
	if o == nil {
		t.Fatalf("no %s %s rendered", kind, name)
	}
	return o
}

// templateContainer returns a container of a workload's pod template.
func templateContainer(t *testing.T, o *unstructured.Unstructured, name string) corev1.Container {
	t.Helper()
	list, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		var ctr corev1.Container
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(c.(map[string]any), &ctr); err != nil {
			t.Fatal(err)
		}
		if ctr.Name == name {
			return ctr
		}
	}
	t.Fatalf("%s %s has no container %s", o.GetKind(), o.GetName(), name)
	return corev1.Container{}
}

// argValue is the value of --name=value in args ("" and false if absent).
func argValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// checkChartConfigs decodes what the chart gives kube-scheduler and the
// extender with their own code (kube-scheduler's strict scheme and
// validation, the extender's config package) and checks that the two
// agree with each other and with the device plugin.
func checkChartConfigs(t *testing.T, objs []*unstructured.Unstructured, schedulerName string) *config.Config {
	t.Helper()
	cm := mustFindObject(t, objs, "ConfigMap", schedulerName+"-config")
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")

	obj, _, err := schedscheme.Codecs.UniversalDecoder().Decode([]byte(data["scheduler.yaml"]), nil, nil)
	if err != nil {
		t.Fatalf("kube-scheduler cannot decode its configuration: %v\n%s", err, data["scheduler.yaml"])
	}
	sc, ok := obj.(*schedconfig.KubeSchedulerConfiguration)
	if !ok {
		t.Fatalf("scheduler.yaml decodes to %T", obj)
	}
	if err := schedvalidation.ValidateKubeSchedulerConfiguration(sc); err != nil {
		t.Errorf("kube-scheduler rejects its configuration: %v", err)
	}
	if len(sc.Profiles) != 1 || sc.Profiles[0].SchedulerName != schedulerName {
		t.Errorf("profiles %v, want the one profile %s", sc.Profiles, schedulerName)
	}
	if len(sc.Extenders) != 1 {
		t.Fatalf("%d extenders, want 1", len(sc.Extenders))
	}
	ext := sc.Extenders[0]
	if ext.BindVerb != "bind" || ext.FilterVerb != "filter" || !ext.NodeCacheCapable || ext.Ignorable || len(ext.ManagedResources) != 2 {
		t.Errorf("extender %+v: want filter, bind, nodeCacheCapable, not ignorable, both GPU resources", ext)
	}
	if sc.LeaderElection.ResourceName != schedulerName || sc.LeaderElection.ResourceNamespace != cm.GetNamespace() {
		t.Errorf("leader election lease %s/%s, want %s/%s", sc.LeaderElection.ResourceNamespace, sc.LeaderElection.ResourceName, cm.GetNamespace(), schedulerName)
	}

	path := filepath.Join(t.TempDir(), "extender.yaml")
	if err := os.WriteFile(path, []byte(data["extender.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	ec, err := config.Load(path)
	if err != nil {
		t.Fatalf("the extender rejects its configuration: %v", err)
	}
	config.SetDefaults(ec)
	if errs := config.Validate(ec); len(errs) > 0 {
		t.Errorf("the extender rejects its configuration: %v", errs.ToAggregate())
	}
	if ec.Address != "127.0.0.1" {
		t.Errorf("extender address %q, want loopback only", ec.Address)
	}
	// Filter may answer the best nodes only where the extender's scores
	// alone rank them: there the choice is the same.
	prof := sc.Profiles[0]
	scoresOnly := prof.Plugins != nil && slices.ContainsFunc(prof.Plugins.Score.Disabled, func(p schedconfig.Plugin) bool { return p.Name == "*" })
	if want := map[bool]config.FilterKeeps{true: config.FilterKeepsBest, false: config.FilterKeepsFitting}[scoresOnly]; ec.FilterKeeps != want {
		t.Errorf("the extender's filter keeps %q nodes, want %q where the profile's own scores are off: %v", ec.FilterKeeps, want, scoresOnly)
	}
	if want := "http://127.0.0.1:" + strconv.Itoa(ec.Port) + "/gpushare-scheduler"; ext.URLPrefix != want {
		t.Errorf("kube-scheduler calls %s, the extender listens at %s", ext.URLPrefix, want)
	}
	// Nothing exposes the extender's verbs outside its pod: a Service of
	// the scheduler's pods may reach only the read-only probes port
	// (/healthz, /readyz, /metrics, /version), never the verbs' port.
	for _, svc := range objs {
		if svc.GetKind() != "Service" || svc.GetLabels()["app.kubernetes.io/name"] != schedulerName {
			continue
		}
		ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		for _, p := range ports {
			if target := p.(map[string]any)["targetPort"]; target != "probes" {
				t.Errorf("Service %s reaches port %v of the scheduler's pods: the extender's verbs must stay on loopback", svc.GetName(), target)
			}
		}
	}
	if ds := findObject(objs, "DaemonSet", "gpupack-device-plugin"); ds != nil {
		unit, _ := argValue(templateContainer(t, ds, "device-plugin").Args, "memory-unit")
		if unit != ec.MemoryUnit {
			t.Errorf("device plugin --memory-unit=%s, extender memoryUnit %s: they must match", unit, ec.MemoryUnit)
		}
	}
	return ec
}

// TestDeployChart renders the chart for several value sets and applies
// each with a server-side dry run to the local cluster's API server.
func TestDeployChart(t *testing.T) {
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, namespace string
		set             []string
		check           func(t *testing.T, objs []*unstructured.Unstructured)
	}{{
		name: "defaults", namespace: "kube-system",
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			if ec := checkChartConfigs(t, objs, "gpupack-scheduler"); ec.Profiling {
				t.Errorf("profiling on by default")
			}
			dep := mustFindObject(t, objs, "Deployment", "gpupack-scheduler")
			sched := templateContainer(t, dep, "kube-scheduler")
			// The cluster's own version (build metadata cut).
			if want := "registry.k8s.io/kube-scheduler:" + regexp.MustCompile(`^v\d+\.\d+\.\d+`).FindString(v.GitVersion); sched.Image != want {
				t.Errorf("kube-scheduler image %s, want %s", sched.Image, want)
			}
			if r, _, _ := unstructured.NestedFieldNoCopy(dep.Object, "spec", "replicas"); fmt.Sprint(r) != "2" {
				t.Errorf("replicas %v, want 2 (leader election)", r)
			}
			mustFindObject(t, objs, "Secret", "gpupack-scheduler-signing-key")
			mustFindObject(t, objs, "PodDisruptionBudget", "gpupack-scheduler")
			ds := mustFindObject(t, objs, "DaemonSet", "gpupack-device-plugin")
			spec, _, _ := unstructured.NestedMap(ds.Object, "spec", "template", "spec")
			if spec["priorityClassName"] != "system-node-critical" {
				t.Errorf("device plugin priority %v", spec["priorityClassName"])
			}
			if sel, _, _ := unstructured.NestedStringMap(spec, "nodeSelector"); sel["gpushare"] != "true" {
				t.Errorf("device plugin nodeSelector %v, want gpushare=true", sel)
			}
			dp := templateContainer(t, ds, "device-plugin")
			if sc := dp.SecurityContext; sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
				t.Errorf("device plugin capabilities %+v, want every one dropped", sc)
			}
			if len(dp.Ports) != 1 || dp.Ports[0].ContainerPort != 9445 {
				t.Errorf("device plugin ports %+v, want metrics on 9445", dp.Ports)
			}
			var mounts []string
			for _, m := range dp.VolumeMounts {
				mounts = append(mounts, m.MountPath)
			}
			for _, want := range []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources", "/host/proc"} {
				if !slices.Contains(mounts, want) {
					t.Errorf("device plugin mounts %v, want %s", mounts, want)
				}
			}
		},
	}, {
		name: "ha-mib-fgd-eviction", namespace: "kube-system",
		set: []string{
			"scheduler.replicas=3", "memoryUnit=MiB", "extender.policy=fgd", "extender.signingKey.existingSecret=my-key",
			"extender.workloadCoverage=0.9", // --set passes it as a string
			"extender.logFormat=json", "extender.profiling=true", "devicePlugin.logFormat=json",
			"devicePlugin.evictOverShareAfter=10m", "devicePlugin.ignoredXids={13,31,43}", "devicePlugin.cgpuDisable=true",
			"devicePlugin.runtimeClassName=nvidia", "devicePlugin.podResources=false", "devicePlugin.kubeletDir=/var/lib/k0s/kubelet",
			"scheduler.image.tag=v1.36.0",
		},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			ec := checkChartConfigs(t, objs, "gpupack-scheduler")
			if ec.MemoryUnit != "MiB" || ec.Policy != "fgd" || ec.WorkloadCoverage != 0.9 || !ec.Profiling {
				t.Errorf("extender config %+v", ec)
			}
			if findObject(objs, "Secret", "") != nil {
				t.Errorf("a Secret rendered although existingSecret is set")
			}
			sched := mustFindObject(t, objs, "Deployment", "gpupack-scheduler")
			if got, ok := argValue(templateContainer(t, sched, "gpupack-extender").Args, "logging-format"); got != "json" {
				t.Errorf("extender --logging-format=%q (set %v), want json", got, ok)
			}
			ds := mustFindObject(t, objs, "DaemonSet", "gpupack-device-plugin")
			args := templateContainer(t, ds, "device-plugin").Args
			for flag, want := range map[string]string{
				"evict-over-share-after": "10m", "ignored-xids": "13,31,43", "memory-unit": "MiB",
				"pod-resources-socket": "", "device-plugin-dir": "/var/lib/k0s/kubelet/device-plugins", "logging-format": "json",
			} {
				if got, ok := argValue(args, flag); !ok || got != want {
					t.Errorf("--%s=%q (set %v), want %q", flag, got, ok, want)
				}
			}
			if !slices.Contains(args, "--cgpu-disable") {
				t.Errorf("args %v lack --cgpu-disable", args)
			}
			cr := mustFindObject(t, objs, "ClusterRole", "gpupack-device-plugin")
			if !strings.Contains(objectJSON(t, cr), "pods/eviction") {
				t.Errorf("eviction on but the device plugin may not evict: %s", objectJSON(t, cr))
			}
		},
	}, {
		name: "own-namespace", namespace: "gpupack-system",
		set: []string{
			"scheduler.name=gpu-sched", "scheduler.leaderElection.enabled=false", "scheduler.replicas=1",
			"scheduler.extenderScoresOnly=false", "scheduler.percentageOfNodesToScore=0", "extender.signingKey.create=false",
			"extender.port=40000", "devicePlugin.metricsPort=0", "devicePlugin.capabilities={SYS_ADMIN}",
		},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			checkChartConfigs(t, objs, "gpu-sched")
			if findObject(objs, "Secret", "") != nil {
				t.Errorf("a Secret rendered with signingKey.create=false")
			}
			if findObject(objs, "PodDisruptionBudget", "") != nil {
				t.Errorf("a PodDisruptionBudget rendered for one replica")
			}
			ds := mustFindObject(t, objs, "DaemonSet", "gpupack-device-plugin")
			dp := templateContainer(t, ds, "device-plugin")
			if len(dp.Ports) != 0 || dp.LivenessProbe != nil {
				t.Errorf("metrics off but ports %v, probe %v", dp.Ports, dp.LivenessProbe)
			}
			if !slices.Equal(dp.SecurityContext.Capabilities.Add, []corev1.Capability{"SYS_ADMIN"}) {
				t.Errorf("capabilities %+v", dp.SecurityContext.Capabilities)
			}
		},
	}, {
		name: "device-plugin-only", namespace: "kube-system",
		set: []string{"scheduler.enabled=false"},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, o := range objs {
				if !strings.Contains(o.GetName(), "device-plugin") {
					t.Errorf("%s %s rendered with scheduler.enabled=false", o.GetKind(), o.GetName())
				}
			}
		},
	}}
	// The dry run has teeth: a field the API does not know is refused.
	t.Run("unknown-field-refused", func(t *testing.T) {
		ds := mustFindObject(t, renderChart(t, "kube-system"), "DaemonSet", "gpupack-device-plugin").DeepCopy()
		if err := unstructured.SetNestedField(ds.Object, "x", "spec", "template", "spec", "hostPID_typo"); err != nil {
			t.Fatal(err)
		}
		errs := applyErrors(t, []*unstructured.Unstructured{ds}, true)
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), "hostPID_typo") {
			t.Errorf("errors %v, want the unknown field refused", errs)
		}
	})
	// helm install itself, as a user runs it, against the API server
	// (--dry-run=server: capabilities and lookup from the cluster, nothing
	// stored), with its notes.
	t.Run("helm-install-dry-run", func(t *testing.T) {
		out := string(runHelm(t, "install", "gpupack", chartDir, "--namespace", "kube-system", "--kubeconfig", local.Kubeconfig, "--dry-run=server"))
		for _, want := range []string{"STATUS: pending-install", "NOTES:", "kubectl label node <gpu-node> gpushare=true", "schedulerName: gpupack-scheduler",
			"image: registry.k8s.io/kube-scheduler:" + regexp.MustCompile(`^v\d+\.\d+\.\d+`).FindString(v.GitVersion)} {
			if !strings.Contains(out, want) {
				t.Errorf("helm install --dry-run=server output lacks %q:\n%s", want, out)
			}
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.namespace != "kube-system" {
				createNamespaceOnce(t, tc.namespace)
			}
			objs := renderChart(t, tc.namespace, tc.set...)
			tc.check(t, objs)
			applyObjects(t, objs, true)
		})
	}
}

func objectJSON(t *testing.T, o *unstructured.Unstructured) string {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func createNamespaceOnce(t *testing.T, name string) {
	t.Helper()
	_, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

// TestDeployStaticManifests checks that deploy/manifests/gpupack.yaml is
// what the chart renders with deploy/manifests/values.yaml (make
// manifests), that it pins the Kubernetes version the local cluster runs,
// and applies it with a server-side dry run.
func TestDeployStaticManifests(t *testing.T) {
	file, err := os.ReadFile(staticManifest)
	if err != nil {
		t.Fatal(err)
	}
	header, body, _ := bytes.Cut(file, []byte("\n"))
	if !bytes.HasPrefix(header, []byte("# Generated")) {
		t.Errorf("%s does not start with its generated-file header: %q", staticManifest, header)
	}
	want := runHelm(t, "template", "gpupack", chartDir, "--namespace", "kube-system", "-f", staticValues)
	if !bytes.Equal(body, want) {
		t.Fatalf("%s is not what the chart renders: run make manifests", staticManifest)
	}
	objs := decodeManifests(t, file)
	checkChartConfigs(t, objs, "gpupack-scheduler")
	sched := templateContainer(t, mustFindObject(t, objs, "Deployment", "gpupack-scheduler"), "kube-scheduler")
	if want := "registry.k8s.io/kube-scheduler:" + cluster.KubernetesVersion; sched.Image != want {
		t.Errorf("static kube-scheduler image %s, want %s (the version the tests run)", sched.Image, want)
	}
	applyObjects(t, objs, true)
}

// TestDeployRBAC installs the chart's service accounts and RBAC for real,
// asks the API server (SubjectAccessReview) whether each account may make
// exactly the calls its code makes and not others, then runs the chart's
// scheduler pod and device plugin as processes under their accounts'
// tokens (see runChartScheduler and runChartDevicePlugin).
func TestDeployRBAC(t *testing.T) {
	const ns, sched = "gpupack-rbac", "rbac-sched"
	createNamespaceOnce(t, ns)
	var rbac []*unstructured.Unstructured
	all := renderChart(t, ns, "scheduler.name="+sched, "devicePlugin.evictOverShareAfter=10m")
	for _, o := range all {
		if o.GetKind() == "ServiceAccount" || strings.HasPrefix(o.GetAPIVersion(), "rbac.authorization.k8s.io/") {
			rbac = append(rbac, o)
		}
	}
	applyObjects(t, rbac, false)
	t.Cleanup(func() { deleteAppliedObjects(t, rbac) })

	type call struct {
		verb, group, resource, sub, ns, name string
		allowed                              bool
	}
	ext := []call{
		{verb: "get", resource: "pods", ns: "team-a", allowed: true},
		{verb: "list", resource: "pods", allowed: true},
		{verb: "watch", resource: "pods", allowed: true},
		{verb: "create", resource: "pods", sub: "binding", ns: "team-a", allowed: true},
		{verb: "list", resource: "nodes", allowed: true},
		{verb: "watch", resource: "nodes", allowed: true},
		{verb: "create", group: "coordination.k8s.io", resource: "leases", ns: ns, allowed: true},
		{verb: "get", group: "coordination.k8s.io", resource: "leases", ns: ns, name: sched, allowed: true},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", ns: ns, name: sched, allowed: true},
		{verb: "get", resource: "configmaps", ns: "kube-system", name: "extension-apiserver-authentication", allowed: true},
		// not needed, not granted
		{verb: "patch", resource: "pods", ns: "team-a"},
		{verb: "patch", resource: "nodes"},
		{verb: "update", group: "coordination.k8s.io", resource: "leases", ns: ns, name: "someone-else"},
		{verb: "get", resource: "secrets", ns: ns},
		{verb: "update", resource: "configmaps", ns: ns},
	}
	dp := []call{
		{verb: "get", resource: "nodes", name: "a100-0", allowed: true},
		{verb: "patch", resource: "nodes", name: "a100-0", allowed: true},
		// its own node, watched for the label that selects its configuration
		{verb: "list", resource: "nodes", allowed: true},
		{verb: "watch", resource: "nodes", allowed: true},
		{verb: "patch", resource: "nodes", sub: "status", name: "a100-0", allowed: true},
		{verb: "list", resource: "pods", allowed: true},
		{verb: "watch", resource: "pods", allowed: true},
		{verb: "patch", resource: "pods", ns: "team-a", allowed: true},
		{verb: "create", resource: "pods", sub: "eviction", ns: "team-a", allowed: true},
		{verb: "create", resource: "events", ns: "team-a", allowed: true},
		{verb: "patch", resource: "events", ns: "team-a", allowed: true},
		// not needed, not granted
		{verb: "update", resource: "nodes", name: "a100-0"},
		{verb: "delete", resource: "pods", ns: "team-a"},
		{verb: "update", resource: "pods", ns: "team-a"},
		{verb: "create", resource: "pods", sub: "binding", ns: "team-a"},
		{verb: "get", resource: "secrets", ns: ns},
	}
	for sa, calls := range map[string][]call{sched: ext, "gpupack-device-plugin": dp} {
		for _, c := range calls {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + ns + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: c.ns, Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.sub, Name: c.name,
				},
			}}
			got, err := client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed != c.allowed {
				t.Errorf("%s: %s %s/%s %s/%s allowed=%v, want %v (%s)", sa, c.verb, c.resource, c.sub, c.ns, c.name, got.Status.Allowed, c.allowed, got.Status.Reason)
			}
		}
	}

	runChartScheduler(t, ns, sched)
	runChartDevicePlugin(t, ns, mustFindObject(t, all, "DaemonSet", "gpupack-device-plugin"))
}

// deleteAppliedObjects deletes what applyObjects stored (the namespace stays: no
// controller-manager runs to empty it).
func deleteAppliedObjects(t *testing.T, objs []*unstructured.Unstructured) {
	rc, err := clientcmd.BuildConfigFromFlags("", local.Kubeconfig)
	if err != nil {
		t.Error(err)
		return
	}
	dyn := dynamic.NewForConfigOrDie(rc)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Error(err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if err := ri.Delete(context.Background(), o.GetName(), metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

var _ rest.WarningHandler = (*apiWarnings)(nil)
