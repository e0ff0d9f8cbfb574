package deviceplugin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestRunDaemon(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := socketDir(t)
	_, lib := mockNVML(t, dir, "mixed")
	node := fixture.MakeNode("node-a").Obj()
	node.Labels[contract.LabelCGPUDisable] = "true"
	kube := fake.NewClientset(node)
	_, registered := startKubelet(t, dir)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	done := make(chan error, 1)
	go func() {
		done <- RunDaemon(ctx, DaemonConfig{
			Options:     Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB, ProcRoot: t.TempDir()},
			MetricsAddr: addr, UsageInterval: 50 * time.Millisecond,
		}, lib, kube)
	}()
	registration(t, registered)
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	n, err := kube.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := contract.ParseInventory(n.Annotations[contract.AnnotationInventory])
	if err != nil || len(inv.Cards) != 4 || inv.Cards[2].Model != "Tesla T4" {
		t.Errorf("inventory %v, %v", inv, err)
	}
	if q := n.Status.Capacity[contract.ResourceGPUCount]; q.Value() != 4 {
		t.Errorf("gpu-count capacity %v", q)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunDaemon: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("RunDaemon did not stop")
	}
}

func TestRunDaemonWithoutItsNode(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	dir := socketDir(t)
	_, lib := mockNVML(t, dir, "t4x4")
	err := RunDaemon(ctx, DaemonConfig{Options: Options{NodeName: "ghost", Dir: dir, Unit: contract.GiB}}, lib, fake.NewClientset())
	if err == nil {
		t.Error("ran for a node that does not exist")
	}
}
