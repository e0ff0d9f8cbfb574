package devicemanager

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/deviceplugin"
	"github.com/gpupack/gpupack/internal/fixture"
	"github.com/gpupack/gpupack/nvml"
)

// Real cards are used only when asked for: on a node with the NVIDIA driver,
// GPUPACK_REAL_NVML=1 and GPUPACK_CUDA_JOB naming a build of ../cmd/cudajob.
const (
	envRealNVML = "GPUPACK_REAL_NVML"
	envCUDAJob  = "GPUPACK_CUDA_JOB"
)

var pciBusID = regexp.MustCompile(`^[0-9a-fA-F]{8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9a-fA-F]$`)

// TestRealCards runs the device plugin on the node's real cards, through
// our nvml package over the driver's libnvidia-ml, under the kubelet's own
// device-manager code, with two pods sharing card 0. Each container's job
// really takes its share of the card's memory through CUDA; one then grows
// past its share. The plugin must see each job's memory as its pod's
// (through the job's cgroup, as in a container), warn about the greedy one,
// evict it, and see the memory freed when the jobs end.
func TestRealCards(t *testing.T) {
	if os.Getenv(envRealNVML) == "" {
		t.Skipf("set %s=1 (and %s) on a node with NVIDIA cards", envRealNVML, envCUDAJob)
	}
	jobBin := os.Getenv(envCUDAJob)
	if jobBin == "" {
		t.Fatalf("%s: want the path of a build of ./cmd/cudajob", envCUDAJob)
	}
	_, ctx := ktesting.NewTestContext(t)

	// Our nvml package over the real library.
	lib, err := nvml.NewReal(os.Getenv("GPUPACK_NVML_LIBRARY"))
	if err != nil {
		t.Fatal(err)
	}
	devs, err := lib.Devices()
	if err != nil {
		t.Fatal(err)
	}
	sys, err := lib.System()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("driver %q, CUDA %q, %d cards", sys.DriverVersion, sys.CUDADriverVersion, len(devs))
	if !regexp.MustCompile(`^\d+\.\d+`).MatchString(sys.DriverVersion) || !regexp.MustCompile(`^\d+\.\d+$`).MatchString(sys.CUDADriverVersion) {
		t.Errorf("driver %q, CUDA %q: want versions", sys.DriverVersion, sys.CUDADriverVersion)
	}
	if len(devs) == 0 {
		t.Fatal("no cards")
	}
	units := 0
	for i, d := range devs {
		s, err := lib.Sample(d.Index)
		if err != nil {
			t.Fatalf("card %d: %v", d.Index, err)
		}
		t.Logf("card %d: %+v; now %+v", d.Index, d, s)
		if d.Index != i || !strings.HasPrefix(d.UUID, "GPU-") || d.Model == "" || d.MemoryMiB <= 0 || !pciBusID.MatchString(d.PCIBusID) {
			t.Errorf("card %d: %+v: want its index, a GPU- UUID, a model, memory and a PCI bus id", i, d)
		}
		if s.Memory.TotalMiB != d.MemoryMiB {
			t.Errorf("card %d: sampled %d MiB in all, listed %d", i, s.Memory.TotalMiB, d.MemoryMiB)
		}
		units += int(contract.GiB.FromMiB(d.MemoryMiB))
	}

	// Two pods bound to card 0: 8 GiB and 4 GiB.
	kube := fake.NewClientset(fixture.MakeNode("node-a").Obj(),
		bound("fits", `{"0":{"0":8}}`, fixture.MakePod().GPUMem(8)),
		bound("greedy", `{"0":{"0":4}}`, fixture.MakePod().GPUMem(4)),
	)
	var mu sync.Mutex
	var evicted []string
	kube.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		evicted = append(evicted, a.(k8stesting.CreateAction).GetObject().(metav1.Object).GetName())
		return true, nil, nil
	})
	events := record.NewFakeRecorder(100)
	n := runPlugin(ctx, t, lib, kube, deviceplugin.Options{
		Unit: contract.GiB, Recorder: events, EvictOverShareAfter: 3 * time.Second,
	})
	if got := len(n.healthy()); got != units {
		t.Fatalf("%d healthy devices listed, want %d (a GiB each)", got, units)
	}
	taken := map[string]bool{}
	envs := map[string]map[string]string{
		"fits":   n.allocate(ctx, t, taken, 8),
		"greedy": n.allocate(ctx, t, taken, 4),
	}
	for pod, want := range map[string]string{"fits": "8192", "greedy": "4096"} {
		if e := envs[pod]; e[contract.EnvVisibleDevices] != devs[0].UUID || e["GPUPACK_MEMORY_LIMIT_MIB"] != want {
			t.Fatalf("%s: allocated %v, want card 0 (%s) and %s MiB", pod, e, devs[0].UUID, want)
		}
	}
	uctx, stopUsage := context.WithCancel(ctx)
	usageDone := make(chan struct{})
	go func() { defer close(usageDone); n.plugin.WatchUsage(uctx, 500*time.Millisecond) }()
	t.Cleanup(func() { stopUsage(); <-usageDone })

	// The jobs, each in a cgroup named as its pod's: 3/4 of the share (the
	// CUDA context takes some too); greedy grows to 1.5x after 5 s.
	jobs := map[string]*cudaJob{
		"fits":   startJob(t, jobBin, "uid-fits", envs["fits"], "--use=0.75", "--hold=2m"),
		"greedy": startJob(t, jobBin, "uid-greedy", envs["greedy"], "--use=0.75", "--hold=2m", "--exceed=1.5", "--exceed-after=5s"),
	}
	for name, j := range jobs {
		t.Logf("%s: %s", name, j.wait(t, "holding"))
	}

	// The plugin sees each job's memory as its pod's.
	var last *deviceplugin.Usage
	sawUnder := false
	if !poll(ctx, 30*time.Second, func() bool {
		u, err := n.plugin.Usage(ctx)
		if err != nil {
			t.Logf("usage: %v", err)
			return false
		}
		last = u
		used := usedBy(u)
		sawUnder = sawUnder || (used["fits"] >= 6144 && used["greedy"] >= 3072 && used["greedy"] <= 4096)
		return used["fits"] >= 6144 && used["greedy"] >= 3072
	}) {
		t.Fatalf("the jobs' memory was not seen as their pods': %s", describe(last))
	}
	t.Logf("seen: %s", describe(last))
	if !sawUnder {
		t.Logf("greedy was not seen within its share before it grew (the CUDA context's memory counts)")
	}
	if u := usedBy(last); u["fits"] > 8192 {
		t.Errorf("fits uses %d MiB with 3/4 of its 8192 MiB share taken: the CUDA context costs more than a quarter", u["fits"])
	}

	// greedy grows past its share: a warning, then its eviction, and fits
	// is left alone.
	t.Logf("greedy: %s", jobs["greedy"].wait(t, "over it"))
	if !poll(ctx, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(evicted) > 0
	}) {
		u, _ := n.plugin.Usage(ctx)
		t.Fatalf("greedy over its share was not evicted: %s", describe(u))
	}
	mu.Lock()
	if fmt.Sprint(evicted) != "[greedy]" {
		t.Errorf("evicted %v, want [greedy]", evicted)
	}
	mu.Unlock()
	warned := false
	for len(events.Events) > 0 {
		e := <-events.Events
		t.Logf("event: %s", e)
		if strings.Contains(e, deviceplugin.ReasonOverShare+" ") && strings.Contains(e, "greedy") {
			warned = true
		}
		if strings.Contains(e, "fits") {
			t.Errorf("an event about fits, within its share: %s", e)
		}
	}
	if !warned {
		t.Errorf("no %s warning about greedy", deviceplugin.ReasonOverShare)
	}

	// The jobs end: the card's memory is theirs no more.
	for name, j := range jobs {
		t.Logf("%s: %s", name, j.stop(t))
	}
	if !poll(ctx, 30*time.Second, func() bool {
		s, err := lib.Sample(devs[0].Index)
		if err != nil {
			return false
		}
		for _, p := range s.Processes {
			for _, j := range jobs {
				if p.PID == j.cmd.Process.Pid {
					return false
				}
			}
		}
		last, _ = n.plugin.Usage(ctx)
		return true
	}) {
		t.Fatal("card 0 still lists the jobs' processes after they ended")
	}
	t.Logf("after the jobs: %s", describe(last))
}

// usedBy is the MiB each pod's containers hold on card 0.
func usedBy(u *deviceplugin.Usage) map[string]int64 {
	out := map[string]int64{}
	for _, c := range u.Containers {
		if c.Card == 0 {
			out[c.Pod.Name] += c.UsedMiB
		}
	}
	return out
}

func describe(u *deviceplugin.Usage) string {
	if u == nil {
		return "no usage read"
	}
	var b strings.Builder
	for _, c := range u.Cards {
		fmt.Fprintf(&b, "card %d: %d of %d MiB used, %d MiB granted, %d MiB unattributed, SMs %d%%, memory %d%%, %d processes; ",
			c.Index, c.Sample.Memory.UsedMiB, c.Sample.Memory.TotalMiB, c.AllocatedMiB, c.UnattributedMiB,
			c.Sample.Utilization.GPU, c.Sample.Utilization.Memory, len(c.Sample.Processes))
	}
	for _, c := range u.Containers {
		fmt.Fprintf(&b, "%s/%s on card %d: %d of %d MiB; ", c.Pod.Name, c.Container, c.Card, c.UsedMiB, c.LimitMiB)
	}
	return b.String()
}

func poll(ctx context.Context, timeout time.Duration, done func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if done() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// cudaJob is a running cudajob and what it printed.
type cudaJob struct {
	cmd    *exec.Cmd
	lines  chan string // closed when its output ends
	cgroup string
	exited chan error // what Wait returned, once the output ended
	once   sync.Once
	rest   string // what stop saw
}

// startJob runs the job with a container's environment, in a cgroup whose
// path names the pod (as the kubelet's does), so that the plugin finds its
// pod from its PID. The cgroup and the process are removed when the test
// ends, whatever happens.
func startJob(t *testing.T, bin, podUID string, env map[string]string, args ...string) *cudaJob {
	t.Helper()
	cg := podCgroup(t, podUID)
	j := &cudaJob{cmd: exec.Command(bin, args...), lines: make(chan string, 64), cgroup: cg, exited: make(chan error, 1)}
	j.cmd.Env = os.Environ()
	for k, v := range env {
		j.cmd.Env = append(j.cmd.Env, k+"="+v)
	}
	// Killed with the test binary, even on Ctrl-C.
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := j.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	j.cmd.Stderr = j.cmd.Stdout
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(j.cmd.Process.Pid)), 0o644); err != nil {
		j.cmd.Process.Kill()
		t.Fatalf("moving the job into %s: %v", cg, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			j.lines <- sc.Text()
		}
		close(j.lines)
		j.exited <- j.cmd.Wait()
	}()
	t.Cleanup(func() { j.stop(t) })
	return j
}

// wait returns the first line the job prints that holds want.
func (j *cudaJob) wait(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-j.lines:
			if !ok {
				t.Fatalf("the job ended before printing %q: %v", want, <-j.exited)
			}
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("the job did not print %q in 60 s", want)
		}
	}
}

// stop ends the job (SIGTERM, then SIGKILL after 10 s), removes its cgroup,
// and returns the rest of what it printed. Stopping twice is harmless.
func (j *cudaJob) stop(t *testing.T) string {
	t.Helper()
	j.once.Do(func() {
		_ = j.cmd.Process.Signal(syscall.SIGTERM)
		var rest []string
		kill := time.After(10 * time.Second)
	read:
		for {
			select {
			case l, ok := <-j.lines:
				if !ok {
					break read
				}
				rest = append(rest, l)
			case <-kill:
				_ = j.cmd.Process.Kill()
			}
		}
		if err := <-j.exited; err != nil {
			rest = append(rest, "exit: "+err.Error())
		}
		for p := j.cgroup; p != filepath.Dir(cgroupRoot()); p = filepath.Dir(p) {
			_ = os.Remove(p) // the pod's, then ours once empty
		}
		j.rest = strings.Join(rest, "; ")
	})
	return j.rest
}

// cgroupRoot is the hierarchy the test's cgroups go in: the unified one
// (cgroup v2), else v1's pids controller.
func cgroupRoot() string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "/sys/fs/cgroup/gpupack-realtest"
	}
	return "/sys/fs/cgroup/pids/gpupack-realtest"
}

// podCgroup makes .../gpupack-realtest/pod<uid>, the segment a kubelet's
// cgroup path names the pod with.
func podCgroup(t *testing.T, uid string) string {
	t.Helper()
	p := filepath.Join(cgroupRoot(), "pod"+uid)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatalf("the job's cgroup: %v", err)
	}
	return p
}
