package deviceplugin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/mock"
	"github.com/gpupack/gpupack/mock/job"
)

// isolationHarness has pod big (10 GiB of card 0, container id cid-big) and
// pod small (5 GiB of card 0, cid-small); the test process stands for big's
// job and its parent for small's.
func isolationHarness(t *testing.T, evictAfter time.Duration) (*harness, *record.FakeRecorder, string) {
	t.Helper()
	root := t.TempDir()
	rec := record.NewFakeRecorder(100)
	big := bound("big", `{"0":{"0":10}}`, "1", fixture.MakePod().UID("uid-big").GPUMem(10).Started("c0", "cid-big"))
	small := bound("small", `{"0":{"0":5}}`, "2", fixture.MakePod().UID("uid-small").GPUMem(5).Started("c0", "cid-small"))
	h := newHarnessWith(t, "a100x8", func(o *Options) {
		o.ProcRoot, o.Recorder, o.EvictOverShareAfter = root, rec, evictAfter
	}, big, small)
	fakeProc(t, root, os.Getpid(), "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poduid_big.slice/cri-containerd-cid-big.scope")
	fakeProc(t, root, os.Getppid(), "0::/kubepods/burstable/poduid-small/cid-small")
	fakeProc(t, root, 1, "0::/init.scope")
	return h, rec, root
}

func events(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestSoftIsolation(t *testing.T) {
	h, rec, _ := isolationHarness(t, time.Minute)
	for _, p := range []struct {
		pid  int
		used int64
	}{{os.Getpid(), 15360}, {os.Getppid(), 4096}, {1, 1000}} {
		if err := h.store.SetProcess(0, mock.Process{PID: p.pid, UsedMiB: p.used, SM: 30}); err != nil {
			t.Fatal(err)
		}
	}

	u, err := h.plugin.Usage(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		pod         string
		used, limit int64
		over        bool
	}
	var got []row
	for _, c := range u.Containers {
		got = append(got, row{c.Pod.Name, c.UsedMiB, c.LimitMiB, c.Over()})
	}
	want := []row{{"big", 15360, 10240, true}, {"small", 4096, 5120, false}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("containers = %+v, want %+v", got, want)
	}
	if c := u.Cards[0]; c.AllocatedMiB != 15360 || c.UnattributedMiB != 1000 || c.Sample.Memory.UsedMiB != 20456 {
		t.Errorf("card 0: allocated %d, unattributed %d, used %d", c.AllocatedMiB, c.UnattributedMiB, c.Sample.Memory.UsedMiB)
	}

	// At once in the metrics.
	srv := httptest.NewServer(h.plugin.StatusHandler())
	defer srv.Close()
	metrics := get(t, srv.URL+"/metrics")
	for _, re := range []string{
		`gpupack_device_plugin_pod_memory_over_share\{UUID="GPU-[^"]+",container="c0",gpu="0",namespace="default",node="node-a",pod="big",uuid="GPU-[^"]+"\} 1`,
		`gpupack_device_plugin_pod_memory_over_share\{UUID="GPU-[^"]+",container="c0",gpu="0",namespace="default",node="node-a",pod="small",uuid="GPU-[^"]+"\} 0`,
		`gpupack_device_plugin_pod_memory_used_bytes\{UUID="GPU-[^"]+",container="c0",gpu="0",namespace="default",node="node-a",pod="big",uuid="GPU-[^"]+"\} 1.610612736e\+10`,
		`gpupack_device_plugin_pod_memory_limit_bytes\{UUID="GPU-[^"]+",container="c0",gpu="0",namespace="default",node="node-a",pod="big",uuid="GPU-[^"]+"\} 1.073741824e\+10`,
		`gpupack_device_plugin_card_memory_allocated_bytes\{[^}]*index="0",model="NVIDIA A100-SXM4-80GB",[^}]*node="node-a",[^}]*uuid="GPU-[^"]+"\} 1.610612736e\+10`,
		`gpupack_device_plugin_card_memory_total_bytes\{[^}]*index="0",model="NVIDIA A100-SXM4-80GB",[^}]*node="node-a",[^}]*uuid="GPU-[^"]+"\} 8.589934592e\+10`,
		`gpupack_device_plugin_card_memory_unattributed_bytes\{[^}]*index="0",[^}]+\} 1.048576e\+09`,
		`gpupack_device_plugin_card_utilization_ratio\{[^}]*index="0",[^}]+\} 0.9`,
		`gpupack_device_plugin_card_healthy\{[^}]*index="7",[^}]+\} 1`,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("metrics lack %s", re)
		}
	}

	// One event when first seen over, none while it stays over, eviction
	// after the grace period.
	iso := &isolation{since: map[overKey]time.Time{}, evicted: map[types.UID]bool{}}
	t0 := time.Now()
	h.plugin.checkUsage(h.ctx, iso, t0)
	ev := events(rec)
	if len(ev) != 1 || !strings.Contains(ev[0], "Warning GPUMemoryOverShare container c0 of pod default/big uses 15360 MiB of card 0") {
		t.Fatalf("events = %q", ev)
	}
	h.plugin.checkUsage(h.ctx, iso, t0.Add(30*time.Second))
	if ev := events(rec); len(ev) != 0 || evictions(h) != 0 {
		t.Fatalf("within the grace period: events %q, evictions %d", ev, evictions(h))
	}
	h.plugin.checkUsage(h.ctx, iso, t0.Add(61*time.Second))
	if ev := events(rec); len(ev) != 1 || !strings.Contains(ev[0], "GPUMemoryOverShareEvicted") || evictions(h) != 1 {
		t.Fatalf("after the grace period: events %q, evictions %d", ev, evictions(h))
	}
	h.plugin.checkUsage(h.ctx, iso, t0.Add(90*time.Second))
	if evictions(h) != 1 {
		t.Errorf("evicted %d times", evictions(h))
	}

	// Back under its share: forgotten, so a new overrun is reported again.
	if err := h.store.SetProcess(0, mock.Process{PID: os.Getpid(), UsedMiB: 8000}); err != nil {
		t.Fatal(err)
	}
	h.plugin.checkUsage(h.ctx, iso, t0.Add(100*time.Second))
	if len(iso.since) != 0 {
		t.Errorf("still remembered over: %v", iso.since)
	}
}

// evictions counts the eviction requests sent to the API server.
func evictions(h *harness) int {
	n := 0
	for _, a := range h.kube.Actions() {
		if a.GetVerb() == "create" && a.GetSubresource() == "eviction" {
			if _, ok := a.(k8stesting.CreateAction); ok {
				n++
			}
		}
	}
	return n
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestSimulatedJobOverItsShare(t *testing.T) {
	h, rec, _ := isolationHarness(t, 0)
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	env := job.Env{UUIDs: []string{h.uuids[0]}, LimitMiB: 10240}
	self, err := mock.SelfIdentity() // the test process stands for big's job
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- job.Run(ctx, h.store, env, job.Spec{Name: "big", Steps: 2000, StepTime: 2 * time.Millisecond, Exceed: 1.5}, self, io.Discard)
	}()
	iso := &isolation{since: map[overKey]time.Time{}, evicted: map[types.UID]bool{}}
	var over ContainerUsage
	waitFor(t, func() bool {
		h.plugin.checkUsage(h.ctx, iso, time.Now())
		u, err := h.plugin.Usage(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		over = u.Containers[0]
		return over.Over()
	})
	if over.Pod.Name != "big" || over.UsedMiB != 15360 {
		t.Errorf("over: %s", over)
	}
	h.plugin.checkUsage(h.ctx, iso, time.Now()) // the look that saw it over may have been Usage's
	if ev := events(rec); len(ev) != 1 || !strings.Contains(ev[0], "GPUMemoryOverShare") {
		t.Errorf("events = %q", ev)
	}
	if evictions(h) != 0 {
		t.Error("evicted without an eviction grace configured")
	}
	cancel()
	<-done
	// The job left: its memory is free.
	u, err := h.plugin.Usage(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Cards[0].Sample.Memory.UsedMiB != 0 {
		t.Errorf("card 0 still uses %d MiB", u.Cards[0].Sample.Memory.UsedMiB)
	}
}

func TestReadyz(t *testing.T) {
	synced := false
	h := newHarnessWith(t, "t4x4", func(o *Options) { o.Synced = func() bool { return synced } })
	srv := httptest.NewServer(h.plugin.StatusHandler())
	defer srv.Close()
	code := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code("/healthz") != 200 || code("/readyz") != 503 {
		t.Error("before registration: want healthy, not ready")
	}
	h.plugin.registered.Store(true)
	if code("/readyz") != 503 {
		t.Error("ready before the pods were listed")
	}
	synced = true
	if code("/readyz") != 200 {
		t.Error("not ready after registration and sync")
	}
}
