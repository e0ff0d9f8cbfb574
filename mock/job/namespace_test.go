package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpupack/gpupack/mock"
)

// envChildJob makes the test binary a job, as gpupack-train is: it reads
// the environment Allocate gives, records itself and runs until killed.
const envChildJob = "GPUPACK_JOB_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(envChildJob) != "" {
		os.Exit(childJob())
	}
	os.Exit(m.Run())
}

func childJob() int {
	env, err := ReadEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	store, err := StateFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	self, err := mock.SelfIdentity()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, store, env, Spec{Name: "in-a-namespace", Steps: 1 << 20, StepTime: 50 * time.Millisecond}, self, os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// unprivileged skips a test that needs privileges the machine does not
// give, except on CI (CI=true), where it fails.
func unprivileged(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: this test must run)", msg)
	}
	t.Skip(msg)
}

// TestJobInItsOwnPIDNamespace runs a job as PID 1 of a PID namespace of
// its own, as in a container: the simulated NVML, reading the host's /proc,
// must report it under its host PID, and no longer once it is killed
// (which leaves its record in the state, as the kubelet's kill does).
func TestJobInItsOwnPIDNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process in a new PID namespace")
	}
	if os.Geteuid() != 0 {
		unprivileged(t, "making a PID namespace needs root (CAP_SYS_ADMIN); running as uid %d", os.Geteuid())
	}
	dir := t.TempDir()
	s, err := mock.NewState(mock.Config{Node: "n", Preset: "t4x4"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state", "nvml.json")
	store, err := mock.Create(path, s)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "job.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChildJob+"=1", EnvMockState+"="+path,
		"NVIDIA_VISIBLE_DEVICES="+s.Cards[2].UUID, "GPUPACK_MEMORY_LIMIT_MIB=2048")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		for _, e := range []error{syscall.EPERM, syscall.EACCES, syscall.EINVAL, syscall.ENOSYS} {
			if errors.Is(err, e) {
				unprivileged(t, "cannot start a process in a new PID namespace: %v", err)
			}
		}
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()

	// The job records itself: PID 1 of a namespace that is not ours.
	var rec mock.Process
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, err := store.Read()
		if err != nil {
			t.Fatal(err)
		}
		if ps := cur.Cards[2].Processes; len(ps) == 1 {
			rec = ps[0]
			break
		}
		select {
		case err := <-exited:
			stopped = true
			log, _ := os.ReadFile(logPath)
			t.Fatalf("the job ended before recording itself: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("the job never recorded itself:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	own, err := mock.SelfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if rec.PID != 1 || rec.PIDNamespace == 0 || rec.PIDNamespace == own.PIDNamespace || rec.StartTime == 0 {
		t.Fatalf("the job recorded itself as %v; want PID 1 of a namespace other than ours (%d)", rec.Identity(), own.PIDNamespace)
	}

	lib := mock.New(store, mock.WithProcRoot("/proc"))
	running := func() []nvml.ProcessInfo {
		d, ret := lib.DeviceGetHandleByIndex(2)
		if ret != nvml.SUCCESS {
			t.Fatal(ret)
		}
		ps, ret := d.GetComputeRunningProcesses()
		if ret != nvml.SUCCESS {
			t.Fatal(ret)
		}
		return ps
	}
	if ps := running(); len(ps) != 1 || int(ps[0].Pid) != cmd.Process.Pid {
		t.Fatalf("the simulated NVML reports %+v; want the job under its host PID %d", ps, cmd.Process.Pid)
	}

	stop()
	cur, err := store.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(cur.Cards[2].Processes) != 1 {
		t.Fatalf("a killed job leaves its record; the state holds %+v", cur.Cards[2].Processes)
	}
	if ps := running(); len(ps) != 0 {
		t.Errorf("the killed job is still reported: %+v", ps)
	}
}
