package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/gpupack/gpupack/extender"
	"github.com/gpupack/gpupack/inspect"
)

// TestInspectGPUShare runs `kubectl inspect gpushare` (our plugin binary,
// with kubectl's --kubeconfig and --context) against the local cluster:
// its view, read from nodes and pods alone, must be the extender's, card
// by card, and its tables must show the pods it placed.
func TestInspectGPUShare(t *testing.T) {
	ns := namespace(t)
	// 8 GiB on one card; 10 GiB on each of two cards of one node.
	create(t, gpuPod(ns, "one-card", ctr{mem: 8, args: longJob}))
	create(t, gpuPod(ns, "two-cards", ctr{mem: 20, count: 2, args: longJob}))
	one := waitPhase(t, ns, "one-card", corev1.PodRunning, 2*time.Minute)
	two := waitPhase(t, ns, "two-cards", corev1.PodRunning, 2*time.Minute)

	// The plugin's view equals the extender's (/inspect), once both have
	// seen the same pods (other tests' pods may still be going).
	var view *inspect.Cluster
	waitFor(t, time.Minute, "kubectl inspect gpushare to agree with the extender", func() (bool, error) {
		var err error
		view, err = inspect.Collect(context.Background(), client, inspect.Options{})
		if err != nil {
			return false, err
		}
		ext, err := extenderInspect()
		if err != nil {
			return false, err
		}
		if d := compareInspect(view, ext); d != "" {
			return false, fmt.Errorf("%s", d)
		}
		return true, nil
	})
	if view.Unit != "GiB" || len(view.Nodes) != len(nodes) {
		t.Errorf("view in %s of %d nodes, want GiB and the %d simulated nodes", view.Unit, len(view.Nodes), len(nodes))
	}

	bin := filepath.Join(t.TempDir(), "kubectl-inspect-gpushare")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/gpupack/gpupack/cmd/kubectl-inspect-gpushare").CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, out)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		args = append([]string{"--kubeconfig", local.Kubeconfig, "--context", "gpupack"}, args...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl inspect gpushare %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	summary := kubectl()
	for _, want := range []string{"NAME", "IPADDRESS", "GPU0(Allocated/Total)", "GPU Memory(GiB)", "Allocated/Total GPU Memory In Cluster:"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	for _, spec := range nodes {
		if !strings.Contains(summary, spec.Name+" ") {
			t.Errorf("summary lacks node %s:\n%s", spec.Name, summary)
		}
	}

	// -d on the node of each pod: the pod, its units on its cards, the
	// cards' model and health.
	for _, pod := range []*corev1.Pod{one, two} {
		node := pod.Spec.NodeName
		out := kubectl("-d", node)
		model := ""
		for _, n := range view.Nodes {
			if n.Name == node && len(n.Cards) > 0 {
				model = n.Cards[0].Model
			}
		}
		if model == "" || !strings.Contains(out, "NAME:       "+node) || !strings.Contains(out, "Healthy") || !strings.Contains(out, model) {
			t.Errorf("-d %s lacks the node, a card's health or model:\n%s", node, out)
		}
		got := podColumns(out, pod.Name)
		want := map[string]string{}
		for card, units := range allocation(t, pod).PerCard() {
			want[fmt.Sprintf("GPU%d(Allocated)", card)] = fmt.Sprint(units)
		}
		for col, w := range want {
			if got[col] != w {
				t.Errorf("-d %s: pod %s shows %s under %s, want %s:\n%s", node, pod.Name, got[col], col, w, out)
			}
		}
		for col, g := range got {
			if _, ok := want[col]; !ok && strings.HasPrefix(col, "GPU") && g != "0" {
				t.Errorf("-d %s: pod %s shows %s under %s, want 0:\n%s", node, pod.Name, g, col, out)
			}
		}
	}
	if out, err := exec.Command(bin, "--kubeconfig", local.Kubeconfig, "no-such-node").CombinedOutput(); err == nil || !strings.Contains(string(out), "not found") {
		t.Errorf("an unknown node: err %v, output %s; want an error that says so", err, out)
	}
}

// extenderInspect reads the extender's /inspect.
func extenderInspect() (*extender.InspectResult, error) {
	resp, err := http.Get(local.InspectURL())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r extender.InspectResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	return &r, nil
}

// compareInspect says where the plugin's view and the extender's differ
// (cards: total, allocated, model, health; "" when they agree).
func compareInspect(view *inspect.Cluster, ext *extender.InspectResult) string {
	if string(view.Unit) != string(ext.Unit) {
		return fmt.Sprintf("unit %s, extender %s", view.Unit, ext.Unit)
	}
	got := map[string]string{}
	for _, n := range view.Nodes {
		for _, c := range n.Cards {
			got[fmt.Sprintf("%s/%d", n.Name, c.Index)] = fmt.Sprintf("%d/%d %s healthy=%v", c.Allocated, c.Total, c.Model, c.Healthy != nil && *c.Healthy)
		}
		if len(n.Pending) > 0 {
			return fmt.Sprintf("node %s has pods without cards: %v", n.Name, n.Pending)
		}
	}
	want := map[string]string{}
	for _, n := range ext.Nodes {
		for _, c := range n.Cards {
			want[fmt.Sprintf("%s/%d", n.Name, c.Index)] = fmt.Sprintf("%d/%d %s healthy=%v", c.Allocated, c.Total, c.Model, c.Healthy)
		}
	}
	var diffs []string
	for k, w := range want {
		if got[k] != w {
			diffs = append(diffs, fmt.Sprintf("%s: plugin %q, extender %q", k, got[k], w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: plugin %q, extender has no such card", k, g))
		}
	}
	return strings.Join(diffs, "; ")
}

// podColumns reads a pod's row of the -d pods table: column name -> cell.
func podColumns(out, pod string) map[string]string {
	var head []string
	for l := range strings.Lines(out) {
		f := strings.Fields(l)
		if len(f) > 2 && f[0] == "NAME" && f[1] == "NAMESPACE" {
			head = f
			continue
		}
		if head != nil && len(f) == len(head) && f[0] == pod {
			m := map[string]string{}
			for i, h := range head {
				m[h] = f[i]
			}
			return m
		}
	}
	return nil
}
