package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/inspect"
	"github.com/gpupack/gpupack/test/cluster"
)

// runChartScheduler runs what the chart's scheduler pod runs, as
// processes on this machine under the service account's token: the
// extender with the chart's extender.yaml, and kube-scheduler (the
// cluster's version) with the chart's scheduler.yaml, leader election
// included. A GPU pod that names the chart's profile must then be placed
// by them and run. Nothing but the chart's RBAC lets them read, bind and
// take the lease.
func runChartScheduler(t *testing.T, ns, sched string) {
	t.Helper()
	dir := t.TempDir()
	bins, err := cluster.EnsureBinaries(context.Background(), filepath.Join(dir, "bin"), false, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := serviceAccountKubeconfig(t, dir, ns, sched)
	extPort, probePort, schedPort := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	objs := renderChart(t, ns, "scheduler.name="+sched, "extender.signingKey.create=false", "extender.port="+strconv.Itoa(extPort),
		"extender.probePort="+strconv.Itoa(probePort))
	data, _, _ := unstructured.NestedStringMap(mustFindObject(t, objs, "ConfigMap", sched+"-config").Object, "data")
	extCfg, schedCfg := filepath.Join(dir, "extender.yaml"), filepath.Join(dir, "scheduler.yaml")
	// In a pod both use the in-cluster config; here, the account's token.
	sc := data["scheduler.yaml"] + "clientConnection:\n  kubeconfig: " + strconv.Quote(kubeconfig) + "\n"
	if err := os.WriteFile(extCfg, []byte(data["extender.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(schedCfg, []byte(sc), 0o644); err != nil {
		t.Fatal(err)
	}

	ext := startProcess(t, bins.Extender, "--kubeconfig="+kubeconfig, "--config="+extCfg, "--v=2")
	// Ready on the probe port the kubelet's readiness probe uses.
	ext.waitOK(t, "http://127.0.0.1:"+strconv.Itoa(probePort)+"/readyz")
	ks := startProcess(t, bins.Scheduler, "--config="+schedCfg, "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort),
		"--authentication-kubeconfig="+kubeconfig, "--authorization-kubeconfig="+kubeconfig, "--v=2")
	ks.waitOK(t, "https://127.0.0.1:"+strconv.Itoa(schedPort)+"/healthz")

	podNS := namespace(t)
	pod := gpuPod(podNS, "through-the-chart", ctr{mem: 4, args: longJob})
	pod.Spec.SchedulerName = sched
	create(t, pod)
	got := waitPhase(t, podNS, pod.Name, corev1.PodRunning, 2*time.Minute)
	// The chart's extender decided and bound it.
	if got.Annotations[contract.AnnotationNode] != got.Spec.NodeName {
		t.Errorf("pod on %s, the extender's decision says %q", got.Spec.NodeName, got.Annotations[contract.AnnotationNode])
	}
	allocation(t, got)
	lease, err := client.CoordinationV1().Leases(ns).Get(context.Background(), sched, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Errorf("lease %s/%s: %v, %+v; want one held by the scheduler", ns, sched, err, lease)
	}
	for _, p := range []*testProcess{ext, ks} {
		if l := p.logs(); strings.Contains(l, "forbidden") {
			t.Errorf("%s was refused a call under the chart's RBAC:\n%s", p.name, l)
		}
	}
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// service account (a token from the TokenRequest API).
func serviceAccountKubeconfig(t *testing.T, dir, ns, sa string) string {
	t.Helper()
	exp := int64(3600)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}
	tok, err := client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientcmd.LoadFromFile(local.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts[sa] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	kc.CurrentContext = sa
	path := filepath.Join(dir, sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testProcess is a program the test started; it is killed when the test ends.
type testProcess struct {
	name string
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (p *testProcess) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *testProcess) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startProcess(t *testing.T, bin string, args ...string) *testProcess {
	t.Helper()
	p := &testProcess{name: filepath.Base(bin), done: make(chan error, 1)}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = p, p
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s logs:\n%s", p.name, p.logs())
		}
	})
	return p
}

// waitOK waits until url answers 200 (TLS unverified), failing if the
// process exits first.
func (p *testProcess) waitOK(t *testing.T, url string) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited: %v\n%s", p.name, err, p.logs())
		default:
		}
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not OK after 60s:\n%s", p.name, url, p.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runChartDevicePlugin runs our device plugin with the arguments the
// chart's DaemonSet gives it (the kubelet's paths and the cards replaced by
// a temporary folder and simulated T4s) under the service account's token,
// for a Node of its own: it must publish the cards on the Node (get, patch,
// patch status; its pod informer lists and watches), and its /metrics must
// be what kubectl inspect gpushare reads.
func runChartDevicePlugin(t *testing.T, ns string, ds *unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	bin := filepath.Join(dir, "gpupack-device-plugin")
	build := exec.Command("go", "build", "-o", bin, "github.com/gpupack/gpupack/cmd/gpupack-device-plugin")
	build.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the device plugin: %v\n%s", err, out)
	}
	const node = "chart-dp-node"
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{contract.LabelGPUShare: "true"}}}
	if _, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Deleted after the plugin is stopped (cleanups run last first): the
	// other tests count the cluster's GPU nodes.
	t.Cleanup(func() {
		if err := client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting node %s: %v", node, err)
		}
	})
	port := freeLoopbackPort(t)
	pluginDir := filepath.Join(dir, "dp")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append(templateContainer(t, ds, "device-plugin").Args,
		"--device-plugin-dir="+pluginDir, "--pod-resources-socket=", "--proc-root=/proc",
		"--metrics-port="+strconv.Itoa(port), "--nvml=mock:t4x4", "--mock-state="+filepath.Join(dir, "mock.json"),
		"--node-name="+node, "--kubeconfig="+serviceAccountKubeconfig(t, dir, ns, "gpupack-device-plugin"))
	dp := startProcess(t, bin, args...)
	dp.waitOK(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz")

	waitFor(t, 30*time.Second, "the device plugin to publish its cards on "+node, func() (bool, error) {
		got, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		inv, err := contract.ParseInventory(got.Annotations[contract.AnnotationInventory])
		if err != nil {
			return false, err
		}
		count := got.Status.Capacity[contract.ResourceGPUCount]
		return len(inv.Cards) == 4 && count.Value() == 4, nil
	})
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	live, err := inspect.ParseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 4 {
		t.Errorf("kubectl inspect gpushare reads live state of %d cards from the plugin's /metrics, want 4: %v", len(live), live)
	}
	if l := dp.logs(); strings.Contains(l, "forbidden") {
		t.Errorf("the device plugin was refused a call under the chart's RBAC:\n%s", l)
	}
}
