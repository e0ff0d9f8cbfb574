package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/nvml"
)

// healthPlugin is a plugin on simulated cards that watches their health
// until the test ends.
type healthPlugin struct {
	ctx    context.Context
	store  *mock.Store
	plugin *Plugin
	kube   *fake.Clientset
	events *record.FakeRecorder
}

// watchedNVML tells when Health has started watching (NVML events raised
// before are not seen).
type watchedNVML struct {
	nvml.Interface
	watching chan struct{}
}

var _ nvml.Interface = (*watchedNVML)(nil)

func (w *watchedNVML) Health(ctx context.Context, opts nvml.HealthOptions) (<-chan nvml.HealthEvent, error) {
	defer close(w.watching)
	return w.Interface.Health(ctx, opts)
}

// newHealthPlugin starts WatchHealth on a "mixed" node (2 x A100 80 GB,
// 2 x T4); a card made unhealthy by an Xid or ECC error recovers after
// quiet. mod may set the kube fake's reactors before the plugin starts.
func newHealthPlugin(t *testing.T, quiet time.Duration, backoff wait.Backoff, mod func(*fake.Clientset)) *healthPlugin {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := socketDir(t)
	st, inner := mockNVML(t, dir, "mixed")
	lib := &watchedNVML{Interface: inner, watching: make(chan struct{})}
	h := &healthPlugin{ctx: ctx, store: st, kube: fake.NewClientset(fixture.MakeNode("node-a").Obj()), events: record.NewFakeRecorder(16)}
	if mod != nil {
		mod(h.kube)
	}
	p, err := New(Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB, Recorder: h.events,
		Health: nvml.HealthOptions{Poll: 20 * time.Millisecond, Quiet: quiet}}, lib, &pods{}, h.kube)
	if err != nil {
		t.Fatal(err)
	}
	p.publishBackoff = backoff
	h.plugin = p
	watched := make(chan error, 1)
	go func() { watched <- p.WatchHealth(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-watched; err != nil {
			t.Errorf("WatchHealth: %v", err)
		}
		p.close()
	})
	<-lib.watching
	return h
}

// published is the inventory on the node, nil while there is none.
func (h *healthPlugin) published(t *testing.T) *contract.Inventory {
	t.Helper()
	n, err := h.kube.CoreV1().Nodes().Get(h.ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, ok := n.Annotations[contract.AnnotationInventory]
	if !ok {
		return nil
	}
	inv, err := contract.ParseInventory(s)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// nextEvent is the next event recorded.
func (h *healthPlugin) nextEvent(t *testing.T) string {
	t.Helper()
	select {
	case e := <-h.events.Events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event recorded")
	}
	return ""
}

func TestHealthChangesRecordEventsOnTheNode(t *testing.T) {
	for _, tc := range []struct {
		name  string
		card  int
		fault func(*mock.Store) error
		// recover brings the card back (nil: the quiet period does).
		recover   func(*mock.Store) error
		unhealthy string // the cause in the Warning
	}{
		{name: "Xid 79, then quiet", card: 2, fault: func(s *mock.Store) error { return s.InjectXid(2, 79) }, unhealthy: "Xid 79"},
		{name: "double-bit ECC error, then quiet", card: 0, fault: func(s *mock.Store) error { return s.InjectECC(0) }, unhealthy: "double-bit ECC error"},
		{name: "off the bus, then back", card: 3, fault: func(s *mock.Store) error { return s.Lose(3, true) },
			recover: func(s *mock.Store) error { return s.Lose(3, false) }, unhealthy: "lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHealthPlugin(t, 200*time.Millisecond, publishBackoff, nil)
			c := h.plugin.Inventory().Cards[tc.card]
			if err := tc.fault(h.store); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("Warning GPUUnhealthy Card %d (%s, %s) is unhealthy (%s): its aliyun.com/gpu-mem devices are withdrawn until it recovers",
				tc.card, c.UUID, c.Model, tc.unhealthy)
			if diff := cmp.Diff(want, h.nextEvent(t)); diff != "" {
				t.Errorf("event when the card turns unhealthy (-want +got):\n%s", diff)
			}
			if tc.recover != nil {
				if err := tc.recover(h.store); err != nil {
					t.Fatal(err)
				}
			}
			want = fmt.Sprintf("Normal GPUHealthy Card %d (%s, %s) is healthy again (recovered): its aliyun.com/gpu-mem devices are back", tc.card, c.UUID, c.Model)
			if diff := cmp.Diff(want, h.nextEvent(t)); diff != "" {
				t.Errorf("event when the card recovers (-want +got):\n%s", diff)
			}
			// Once each: the node's cards are published after the
			// recovery, and nothing more was recorded.
			waitFor(t, func() bool { inv := h.published(t); return inv != nil && inv.Cards[tc.card].Healthy })
			select {
			case e := <-h.events.Events:
				t.Errorf("another event: %s", e)
			default:
			}
		})
	}
}

func TestPublishOfTheCardsIsRetried(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backoff wait.Backoff
		// failures is how many inventory patches the API server refuses.
		failures int64
		fault    func(*mock.Store) error
		// then runs once every refusal was served.
		then func(*mock.Store) error
		card int
		// healthy is the card's health on the node in the end.
		healthy bool
	}{{
		// The first publish and its first retry fail; the second retry
		// lands. (Quiet is long: the card stays unhealthy.)
		name:     "fails twice, then lands",
		backoff:  wait.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 4, Cap: 10 * time.Millisecond},
		failures: 2, fault: func(s *mock.Store) error { return s.InjectXid(2, 79) },
		card: 2, healthy: false,
	}, {
		// The unhealthy card's publish fails and its retry is an hour
		// away; the card comes back, and the newest state lands at once.
		name:     "a newer change supersedes the retry",
		backoff:  wait.Backoff{Duration: time.Hour, Factor: 2, Steps: 4, Cap: time.Hour},
		failures: 1, fault: func(s *mock.Store) error { return s.Lose(3, true) },
		then: func(s *mock.Store) error { return s.Lose(3, false) },
		card: 3, healthy: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var refused atomic.Int64
			h := newHealthPlugin(t, time.Hour, tc.backoff, func(kube *fake.Clientset) {
				kube.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
					if a.GetSubresource() != "" || refused.Load() >= tc.failures {
						return false, nil, nil
					}
					refused.Add(1)
					return true, nil, apierrors.NewServiceUnavailable("the API server is away")
				})
			})
			if err := tc.fault(h.store); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return refused.Load() == tc.failures })
			if tc.then != nil {
				if err := tc.then(h.store); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, func() bool { inv := h.published(t); return inv != nil && inv.Cards[tc.card].Healthy == tc.healthy })
			if inv, want := h.published(t), h.plugin.Inventory(); !cmp.Equal(want, inv) {
				t.Errorf("the node's cards (-want +got):\n%s", cmp.Diff(want, inv))
			}
		})
	}
}

func TestPublishRetryingGivesUpWhenTheContextEnds(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	dir := socketDir(t)
	_, lib := mockNVML(t, dir, "t4x4")
	kube := fake.NewClientset(fixture.MakeNode("node-a").Obj())
	kube.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("the API server is away")
	})
	p, err := New(Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB}, lib, &pods{}, kube)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	p.publishBackoff = wait.Backoff{Duration: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = p.publishRetrying(ctx)
	if !apierrors.IsServiceUnavailable(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("publishRetrying = %v; want the API server's refusal and the context's end", err)
	}
}
