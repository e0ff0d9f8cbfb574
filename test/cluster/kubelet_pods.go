package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/mock/job"
)

// runningPod is a pod the kubelet admitted.
type runningPod struct {
	pod     *corev1.Pod
	devices map[string][]string // container -> device ids
	jobs    []*jobProcess
	// stopped: deleted, or the kubelet closing. No job of it starts any
	// more, and its end is not reported.
	stopped bool
}

// jobProcess is the simulated training job of one GPU container: a
// process leading its own process group.
type jobProcess struct {
	container, logPath string
	pid                int
	done               chan struct{} // closed once the process is reaped
	err                error         // how it exited, once done
}

// kill kills the job's process group.
func (j *jobProcess) kill() { _ = syscall.Kill(-j.pid, syscall.SIGKILL) }

// errStopped: the job was not started, the pod being stopped or the
// kubelet closing.
var errStopped = errors.New("not started: the pod was stopped or the kubelet is closing")

// admit runs a pending pod new to the kubelet, as a kubelet does, in steps
// that each run only if the one before succeeded:
//  1. record it (not when the kubelet is closing);
//  2. allocate the devices of every GPU container; if one fails, the pod is
//     Failed (UnexpectedAdmissionError) and what it got is freed;
//  3. report it Running;
//  4. start one job per GPU container, with the environment Allocate
//     returned;
//  5. in the background, once every job has ended, report it Succeeded, or
//     Failed with each failed job's last lines, and free its devices.
//
// A pod without GPU containers stops after step 3: it runs until deleted.
// Once the pod is stopped (deleted, or the kubelet closing), no job of it
// starts and its end is not reported.
func (k *kubelet) admit(ctx context.Context, pod *corev1.Pod) {
	if !k.record(pod) {
		return
	}
	log := k.log.WithValues("pod", klog.KObj(pod))
	envs, err := k.allocateAll(ctx, pod)
	if err != nil {
		log.Info("Admission failed", "err", err)
		k.finish(ctx, pod, corev1.PodFailed, "UnexpectedAdmissionError", "Allocate failed for "+err.Error())
		k.release(pod.UID)
		return
	}
	if err := k.updateStatus(ctx, pod, runningStatus(pod, metav1.Now())); err != nil {
		if ctx.Err() == nil {
			log.Error(err, "Reporting the pod running")
		}
		return
	}
	if len(envs) == 0 {
		return
	}
	jobs, failures := k.startJobs(pod, envs)
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.awaitJobs(ctx, pod, jobs, failures)
	}()
}

// record adds a pod to the admitted ones; false when it is there already or
// the kubelet is closing.
func (k *kubelet) record(pod *corev1.Pod) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, seen := k.pods[pod.UID]; seen || k.closing {
		return false
	}
	k.pods[pod.UID] = &runningPod{pod: pod, devices: map[string][]string{}}
	return true
}

// allocateAll allocates the devices of each GPU container, by container
// name: the environment each got.
func (k *kubelet) allocateAll(ctx context.Context, pod *corev1.Pod) (map[string]map[string]string, error) {
	envs := map[string]map[string]string{}
	for _, c := range pod.Spec.Containers {
		q := c.Resources.Limits[contract.ResourceGPUMem]
		if q.Value() <= 0 {
			continue
		}
		env, err := k.allocate(ctx, pod, c.Name, int(q.Value()))
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.Name, err)
		}
		envs[c.Name] = env
	}
	return envs, nil
}

// allocate asks the plugin, as the kubelet's device manager does, for a
// preferred set among the free healthy devices, then allocates it.
func (k *kubelet) allocate(ctx context.Context, pod *corev1.Pod, container string, n int) (map[string]string, error) {
	k.mu.Lock()
	plugin := k.plugin
	var free []string
	for id, healthy := range k.devices {
		if _, taken := k.taken[id]; healthy && !taken {
			free = append(free, id)
		}
	}
	k.mu.Unlock()
	if plugin == nil {
		return nil, errors.New("no device plugin registered for " + string(contract.ResourceGPUMem))
	}
	if len(free) < n {
		return nil, fmt.Errorf("requested %d %s, only %d free", n, contract.ResourceGPUMem, len(free))
	}
	sort.Strings(free)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ids := free[:n]
	pref, err := plugin.API().GetPreferredAllocation(ctx, &api.PreferredAllocationRequest{ContainerRequests: []*api.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: free, AllocationSize: int32(n)},
	}})
	if err == nil && len(pref.ContainerResponses) == 1 && len(pref.ContainerResponses[0].DeviceIDs) == n {
		ids = pref.ContainerResponses[0].DeviceIDs
	} else {
		k.log.Info("No preferred allocation: the kubelet chooses", "pod", klog.KObj(pod), "container", container, "size", n, "err", err)
	}
	resp, err := plugin.API().Allocate(ctx, &api.AllocateRequest{ContainerRequests: []*api.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		return nil, err
	}
	k.log.V(2).Info("Allocated", "pod", klog.KObj(pod), "container", container, "size", n, "env", resp.ContainerResponses[0].Envs[contract.EnvIndex])
	k.mu.Lock()
	for _, id := range ids {
		k.taken[id] = pod.UID
	}
	if rp := k.pods[pod.UID]; rp != nil {
		rp.devices[container] = ids
	}
	k.mu.Unlock()
	return resp.ContainerResponses[0].Envs, nil
}

// runningStatus is the status of a pod whose containers all started at now.
func runningStatus(pod *corev1.Pod, now metav1.Time) *corev1.PodStatus {
	status := pod.Status.DeepCopy()
	status.Phase = corev1.PodRunning
	status.StartTime = &now
	status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		status.ContainerStatuses = append(status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: "sim://" + containerID(pod, c.Name), Ready: true, Started: ptr(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	return status
}

// containerID is the simulated runtime's id of a container.
func containerID(pod *corev1.Pod, name string) string {
	h := sha256.Sum256([]byte(string(pod.UID) + "/" + name))
	return hex.EncodeToString(h[:])
}

// startJobs starts the job of each GPU container; failures say which could
// not start, and why. It stops at the first job refused (errStopped).
func (k *kubelet) startJobs(pod *corev1.Pod, envs map[string]map[string]string) (jobs []*jobProcess, failures []string) {
	for _, c := range pod.Spec.Containers {
		env, ok := envs[c.Name]
		if !ok {
			continue
		}
		j, err := k.startJob(pod, c, env)
		if errors.Is(err, errStopped) {
			break
		}
		if err != nil {
			k.log.Info("Simulated job failed", "pod", klog.KObj(pod), "container", c.Name, "err", err)
			failures = append(failures, fmt.Sprintf("container %s: %v", c.Name, err))
			continue
		}
		jobs = append(jobs, j)
	}
	return jobs, failures
}

// startJob starts a container's job, in its own process group, its output
// in the container's log, its cgroup under the fake /proc, unless the pod is
// stopped or the kubelet closing (errStopped). The check, the start and the
// record are one step under k.mu, the lock killAll and stopPod take to stop
// pods: each job either never starts or is among those they kill.
func (k *kubelet) startJob(pod *corev1.Pod, c corev1.Container, env map[string]string) (*jobProcess, error) {
	cmd := exec.Command(k.train, c.Args...)
	cmd.Env = append(os.Environ(), job.EnvMockState+"="+k.state)
	for key, v := range env {
		cmd.Env = append(cmd.Env, key+"="+v)
	}
	// Its own group, so that a kill reaches what it starts, and Ctrl-C in
	// a terminal reaches only the kubelet, which stops it. Pdeathsig kills
	// it should the kubelet's process die first (strictly: should the
	// thread that started it end; Go ends a thread only when a goroutine
	// locked to it returns, which nothing here does).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logPath := filepath.Join(k.logDir, pod.Namespace+"_"+pod.Name+"_"+c.Name+".log")

	k.mu.Lock()
	defer k.mu.Unlock()
	rp := k.pods[pod.UID]
	if k.closing || rp == nil || rp.stopped {
		return nil, errStopped
	}
	out, err := os.Create(logPath) // kept, as a runtime keeps container logs
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	j := &jobProcess{container: c.Name, logPath: logPath, pid: cmd.Process.Pid, done: make(chan struct{})}
	rp.jobs = append(rp.jobs, j)
	k.writeCgroup(j.pid, pod, c.Name)
	k.wg.Add(1) // not closing: shutdown has not begun to wait
	go func() {
		defer k.wg.Done()
		j.err = cmd.Wait()
		out.Close()
		_ = os.RemoveAll(filepath.Join(k.procRoot, strconv.Itoa(j.pid)))
		close(j.done)
	}()
	return j, nil
}

// writeCgroup records the job's cgroup under the fake /proc, as the
// runtime would place it: kubepods/pod<uid>/<container id>.
func (k *kubelet) writeCgroup(pid int, pod *corev1.Pod, container string) {
	dir := filepath.Join(k.procRoot, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	line := fmt.Sprintf("0::/kubepods/besteffort/pod%s/%s\n", pod.UID, containerID(pod, container))
	_ = os.WriteFile(filepath.Join(dir, "cgroup"), []byte(line), 0o644)
}

// awaitJobs reports the pod's end once all its jobs have ended (the
// containers in failures never started): Succeeded, or Failed saying how
// each failed job exited and what it printed last; then frees its devices.
// A pod stopped meanwhile is not reported.
func (k *kubelet) awaitJobs(ctx context.Context, pod *corev1.Pod, jobs []*jobProcess, failures []string) {
	for _, j := range jobs {
		<-j.done
	}
	if k.stopped(pod.UID) {
		return // killed: deleted, or the kubelet closing
	}
	for _, j := range jobs {
		if j.err == nil {
			continue
		}
		msg := fmt.Sprintf("container %s: %v", j.container, j.err)
		if tail := lastLines(j.logPath, 3); tail != "" {
			msg += ": " + tail
		}
		k.log.Info("Simulated job failed", "pod", klog.KObj(pod), "container", j.container, "err", j.err, "log", j.logPath)
		failures = append(failures, msg)
	}
	phase, reason, message := corev1.PodSucceeded, "", ""
	if len(failures) > 0 {
		phase, reason, message = corev1.PodFailed, "Error", strings.Join(failures, "; ")
	}
	k.finish(ctx, pod, phase, reason, message)
	k.release(pod.UID)
}

// stopped reports whether a pod is stopped or forgotten.
func (k *kubelet) stopped(uid types.UID) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	rp := k.pods[uid]
	return rp == nil || rp.stopped
}

// finish reports the pod's end.
func (k *kubelet) finish(ctx context.Context, pod *corev1.Pod, phase corev1.PodPhase, reason, message string) {
	cur, err := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil || cur.UID != pod.UID {
		return
	}
	status := cur.Status.DeepCopy()
	status.Phase, status.Reason, status.Message = phase, reason, message
	now := metav1.Now()
	code := int32(0)
	if phase == corev1.PodFailed {
		code = 1
	}
	for i := range status.ContainerStatuses {
		cs := &status.ContainerStatuses[i]
		cs.Ready = false
		cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, FinishedAt: now, ContainerID: cs.ContainerID}}
	}
	for i := range status.Conditions {
		status.Conditions[i].Status = corev1.ConditionFalse
	}
	if err := k.updateStatus(ctx, cur, status); err != nil && ctx.Err() == nil {
		k.log.Error(err, "Reporting the pod's end", "pod", klog.KObj(pod))
	}
}

// updateStatus writes a pod's status, retrying on conflicts; a pod of the
// same name with another UID is left alone.
func (k *kubelet) updateStatus(ctx context.Context, pod *corev1.Pod, status *corev1.PodStatus) error {
	for range 5 {
		cur, err := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return nil
		}
		cur.Status = *status
		if _, err = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err == nil {
			return nil
		}
	}
	return fmt.Errorf("updating the status of pod %s: conflicts", klog.KObj(pod))
}

// release frees the devices of a pod that ended.
func (k *kubelet) release(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, owner := range k.taken {
		if owner == uid {
			delete(k.taken, id)
		}
	}
	if rp := k.pods[uid]; rp != nil {
		rp.devices = map[string][]string{}
	}
}

// stopPod stops a pod: no job of it starts any more, each running one is
// killed and reaped, and its devices are freed.
func (k *kubelet) stopPod(uid types.UID) {
	k.mu.Lock()
	rp := k.pods[uid]
	var jobs []*jobProcess
	if rp != nil {
		rp.stopped = true
		jobs = rp.jobs
	}
	k.mu.Unlock()
	if rp == nil {
		return
	}
	for _, j := range jobs {
		j.kill()
	}
	for _, j := range jobs {
		<-j.done
	}
	k.release(uid)
}

// lastLines is the end of a job's log, its last n lines joined by " | ".
func lastLines(path string, n int) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
