package deviceplugin

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// startKubelet serves a registration service on dir/kubelet.sock.
func startKubelet(t *testing.T, dir string) (*grpc.Server, chan *pluginapi.RegisterRequest) {
	t.Helper()
	kl := &testKubelet{registered: make(chan *pluginapi.RegisterRequest, 4)}
	l, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, kl)
	go func() { _ = srv.Serve(l) }()
	return srv, kl.registered
}

func registration(t *testing.T, ch chan *pluginapi.RegisterRequest) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("the plugin did not register")
	}
	return nil
}

func TestRunRegistersAgainWhenTheKubeletRestarts(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := socketDir(t)
	_, lib := mockNVML(t, dir, "mixed")
	kube := fake.NewClientset(fixture.MakeNode("node-a").Obj())
	p, err := New(Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB}, lib, &pods{}, kube)
	if err != nil {
		t.Fatal(err)
	}
	k1, reg1 := startKubelet(t, dir)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	registration(t, reg1)

	// The kubelet restarts: its socket goes and comes back.
	k1.Stop()
	_ = os.Remove(filepath.Join(dir, "kubelet.sock"))
	k2, reg2 := startKubelet(t, dir)
	defer k2.Stop()

	// The plugin registers with the new kubelet and answers on its socket.
	// (A registration may land twice: the first kubelet can go away while
	// answering, and the plugin then retries; each answer counts.)
	var first *pluginapi.ListAndWatchResponse
	for first == nil {
		r := registration(t, reg2)
		conn, err := grpc.NewClient("unix://"+filepath.Join(dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := pluginapi.NewDevicePluginClient(conn).ListAndWatch(ctx, &pluginapi.Empty{})
		if err == nil {
			first, err = stream.Recv()
		}
		if err != nil {
			t.Logf("ListAndWatch after a registration: %v; waiting for the next", err)
		}
	}
	if len(first.Devices) != 80+80+15+15 {
		t.Errorf("%d devices", len(first.Devices))
	}

	// The node carries the inventory and gpu-count.
	if err := p.PublishNode(ctx); err != nil {
		t.Fatal(err)
	}
	node, err := kube.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := contract.ParseInventory(node.Annotations[contract.AnnotationInventory])
	if err != nil || len(inv.Cards) != 4 || inv.Cards[2].Model != "Tesla T4" || inv.Cards[0].MemoryMiB != 81920 {
		t.Errorf("inventory %+v, %v", inv, err)
	}
	if q := node.Status.Allocatable[contract.ResourceGPUCount]; q.Value() != 4 {
		t.Errorf("gpu-count %s", q.String())
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// openConns counts the connections a gRPC server holds open.
type openConns struct{ n atomic.Int64 }

var _ stats.Handler = (*openConns)(nil)

func (c *openConns) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c *openConns) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c *openConns) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *openConns) HandleConn(_ context.Context, s stats.ConnStats) {
	switch s.(type) {
	case *stats.ConnBegin:
		c.n.Add(1)
	case *stats.ConnEnd:
		c.n.Add(-1)
	}
}

func TestRunClosesThePodResourcesConnection(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir := socketDir(t)
	_, lib := mockNVML(t, dir, "t4x4")
	conns := &openConns{}
	_, sock := servePodResources(t, dir, grpc.StatsHandler(conns))
	p, err := New(Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB, PodResourcesSocket: sock}, lib, &pods{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, reg := startKubelet(t, dir)
	defer k.Stop()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	registration(t, reg)

	// Asking the kubelet what containers hold opens the connection.
	if err := p.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return conns.n.Load() == 1 })

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	// Run has returned: the kubelet sees the connection closed.
	waitFor(t, func() bool { return conns.n.Load() == 0 })
}

// TestRegisterRetrying: registration is retried until the kubelet's socket
// answers, and ends with the context.
func TestRegisterRetrying(t *testing.T) {
	for _, tc := range []struct {
		name string
		// kubeletAfter: when the kubelet starts serving (0: never);
		// cancelAfter: when the context ends (0: never).
		kubeletAfter, cancelAfter time.Duration
		wantErr                   error
	}{
		{name: "the kubelet comes up later", kubeletAfter: 700 * time.Millisecond},
		{name: "the context ends first", cancelAfter: 500 * time.Millisecond, wantErr: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			dir := socketDir(t)
			_, lib := mockNVML(t, dir, "t4x4")
			p, err := New(Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB}, lib, &pods{}, fake.NewClientset())
			if err != nil {
				t.Fatal(err)
			}
			kubelet := make(chan chan *pluginapi.RegisterRequest, 1)
			if tc.kubeletAfter > 0 {
				time.AfterFunc(tc.kubeletAfter, func() {
					k, r := startKubelet(t, dir)
					t.Cleanup(k.Stop)
					kubelet <- r
				})
			}
			if tc.cancelAfter > 0 {
				time.AfterFunc(tc.cancelAfter, cancel)
			}
			err = p.registerRetrying(ctx)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("registerRetrying: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil {
				if r := registration(t, <-kubelet); r.ResourceName != string(contract.ResourceGPUMem) {
					t.Errorf("registered %q", r.ResourceName)
				}
			}
		})
	}
}
