// Package e2eutil is what the end-to-end test packages share: waiting,
// a namespace per test, pods and their recorded allocations, logs of the
// in-process components. It must not depend on a particular cluster's
// layout (package cluster brings clusters up).
package e2eutil

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
)

// WaitFor calls cond until it is true, failing the test after timeout with
// cond's last error.
func WaitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Namespace makes a namespace named after the test and deletes its pods
// after it, waiting until they are gone.
func Namespace(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { DeletePods(t, client, name) })
	return name
}

// DeletePods deletes the pods of ns and waits until they are gone.
func DeletePods(t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	ctx := context.Background()
	if err := client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Errorf("deleting the pods of %s: %v", ns, err)
		return
	}
	WaitFor(t, 2*time.Minute, "the pods of "+ns+" to be gone", func() (bool, error) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			if p.Spec.NodeName == "" { // never scheduled: no kubelet finishes it
				zero := int64(0)
				_ = client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
		}
		return len(list.Items) == 0, nil
	})
}

// Create creates a pod.
func Create(t *testing.T, client kubernetes.Interface, pod *corev1.Pod) {
	t.Helper()
	if _, err := client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Allocation is the pod's recorded allocation (the extender's decision, as
// the device plugin reconciled it).
func Allocation(t *testing.T, pod *corev1.Pod) contract.Allocation {
	t.Helper()
	a, err := contract.ParseAllocation(pod.Annotations[contract.AnnotationAllocation])
	if err != nil {
		t.Fatalf("pod %s: allocation annotation: %v", pod.Name, err)
	}
	return a
}

// LogToFile sends the test binary's own klog output (the in-process
// components') to path, errors included, and nothing to stderr.
func LogToFile(path string) {
	fs := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"v": "2", "logtostderr": "false", "stderrthreshold": "FATAL", "log_file": path} {
		_ = fs.Set(k, v)
	}
}

// OnInterrupt runs stop when the test binary is interrupted (Ctrl-C,
// SIGTERM), then exits: what the tests started must not outlive them.
func OnInterrupt(stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "%s: tearing the cluster down\n", s)
		stop()
		os.Exit(130)
	}()
}

// ParseMetrics reads a Prometheus text exposition into its families.
func ParseMetrics(body []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(bytes.NewReader(body))
}

// MetricValue is the value of the first series of family name whose labels
// include want (any other labels allowed), if there is one.
func MetricValue(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}
