package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
	dpserver "k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/plugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/mock/job"
)

// kubelet is a test kubelet for one simulated node. Its device-plugin side
// is the kubelet's own registration server and plugin client; around it, it
// does what a kubelet does for GPU pods: keeps the node's gpu-mem capacity
// from ListAndWatch, asks the plugin for a preferred allocation and then
// Allocate for each GPU container of each pod bound to the node, starts the
// simulated training job with the environment Allocate returned, reports
// the pod Running and then Succeeded or Failed, frees the devices, and
// serves the PodResources API.
type kubelet struct {
	node                string
	client              kubernetes.Interface
	pluginDir, procRoot string
	podResourcesSocket  string
	train, state        string
	logDir              string // the simulated jobs' output, one file per container
	log                 klog.Logger
	ctx                 context.Context

	mu      sync.Mutex
	srv     dpserver.Server
	plugin  dpserver.DevicePlugin
	devices map[string]bool           // id -> healthy
	taken   map[string]types.UID      // id -> pod holding it
	pods    map[types.UID]*runningPod // admitted pods
	queue   chan *corev1.Pod
	prSrv   *grpc.Server
}

// runningPod is a pod the kubelet admitted.
type runningPod struct {
	pod     *corev1.Pod
	devices map[string][]string // container -> device ids
	procs   []*exec.Cmd
	stopped bool
}

var (
	_ dpserver.ClientHandler       = (*kubelet)(nil)
	_ dpserver.RegistrationHandler = (*kubelet)(nil)
)

// PluginConnected is called when a plugin registered and was dialled.
func (k *kubelet) PluginConnected(_ context.Context, resource string, p dpserver.DevicePlugin) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.plugin = p
	k.log.V(2).Info("Device plugin connected", "resource", resource)
	return nil
}

// PluginDisconnected is called when a plugin's connection ended.
func (k *kubelet) PluginDisconnected(_ klog.Logger, resource string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.plugin = nil
}

// PluginListAndWatchReceiver keeps the device list and the node's gpu-mem
// capacity (all devices) and allocatable (healthy ones), as the kubelet's
// device manager does.
func (k *kubelet) PluginListAndWatchReceiver(_ klog.Logger, resource string, resp *api.ListAndWatchResponse) {
	k.mu.Lock()
	k.devices = map[string]bool{}
	healthy := 0
	for _, d := range resp.Devices {
		k.devices[d.ID] = d.Health == api.Healthy
		if d.Health == api.Healthy {
			healthy++
		}
	}
	total := len(resp.Devices)
	k.mu.Unlock()
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{
		"capacity":    map[string]string{resource: strconv.Itoa(total)},
		"allocatable": map[string]string{resource: strconv.Itoa(healthy)},
	}})
	if _, err := k.client.CoreV1().Nodes().Patch(k.ctx, k.node, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil && k.ctx.Err() == nil {
		k.log.Error(err, "Updating the node's GPU capacity")
	}
}

// CleanupPluginDirectory removes plugin sockets, as the kubelet does when
// it starts.
func (k *kubelet) CleanupPluginDirectory(_ klog.Logger, dir string) error {
	return RemovePluginSockets(dir)
}

// RemovePluginSockets removes the files (plugin sockets) of a
// device-plugins folder, as the kubelet does when it starts; it keeps
// folders.
func RemovePluginSockets(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return nil
}

// startRegistration starts (or restarts) the registration server.
func (k *kubelet) startRegistration() error {
	srv, err := dpserver.NewServer(k.log, filepath.Join(k.pluginDir, "kubelet.sock"), k, k)
	if err != nil {
		return err
	}
	if err := srv.Start(k.log); err != nil {
		return err
	}
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	return nil
}

// Restart stops the registration server (dropping the plugin's connection)
// and starts a new one, as a kubelet restart does. What was allocated stays
// allocated (the real kubelet keeps it in its checkpoint).
func (k *kubelet) restart() error {
	k.mu.Lock()
	srv := k.srv
	k.mu.Unlock()
	if err := srv.Stop(k.log); err != nil {
		return err
	}
	k.mu.Lock()
	k.plugin = nil
	k.mu.Unlock()
	if err := k.startRegistration(); err != nil {
		return err
	}
	// The plugin sees kubelet.sock recreated and registers again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		k.mu.Lock()
		back := k.plugin != nil
		k.mu.Unlock()
		if back {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the device plugin did not register again within 30s of the kubelet's restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run serves until ctx ends: registration, PodResources, and the pods of
// the node.
func (k *kubelet) run(ctx context.Context, informer cache.SharedIndexInformer) error {
	k.ctx = ctx
	k.devices, k.taken, k.pods = map[string]bool{}, map[string]types.UID{}, map[types.UID]*runningPod{}
	k.queue = make(chan *corev1.Pod, 1024)
	if err := os.MkdirAll(k.pluginDir, 0o755); err != nil {
		return err
	}
	if err := k.startRegistration(); err != nil {
		return err
	}
	if err := k.servePodResources(); err != nil {
		return err
	}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.observe(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { k.observe(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				k.stopPod(pod.UID)
			}
		},
	})
	if err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case pod := <-k.queue:
				k.admit(pod)
			}
		}
	}()
	go func() {
		<-ctx.Done()
		k.mu.Lock()
		srv := k.srv
		uids := make([]types.UID, 0, len(k.pods))
		for uid := range k.pods {
			uids = append(uids, uid)
		}
		k.mu.Unlock()
		for _, uid := range uids {
			k.stopPod(uid)
		}
		_ = srv.Stop(k.log)
		k.prSrv.Stop()
	}()
	return nil
}

// observe queues new pods and finishes deleting ones being deleted.
func (k *kubelet) observe(pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil {
		k.stopPod(pod.UID)
		zero := int64(0)
		err := k.client.CoreV1().Pods(pod.Namespace).Delete(k.ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil && k.ctx.Err() == nil {
			k.log.V(2).Info("Finishing a pod's deletion", "pod", klog.KObj(pod), "err", err)
		}
		return
	}
	if pod.Status.Phase != corev1.PodPending && pod.Status.Phase != "" {
		return
	}
	k.mu.Lock()
	_, seen := k.pods[pod.UID]
	if !seen {
		k.pods[pod.UID] = &runningPod{pod: pod, devices: map[string][]string{}}
	}
	k.mu.Unlock()
	if !seen {
		k.queue <- pod
	}
}

// containerID is the simulated runtime's id of a container.
func containerID(pod *corev1.Pod, name string) string {
	h := sha256.Sum256([]byte(string(pod.UID) + "/" + name))
	return hex.EncodeToString(h[:])
}

// admit allocates the pod's GPU containers and starts its jobs.
func (k *kubelet) admit(pod *corev1.Pod) {
	log := k.log.WithValues("pod", klog.KObj(pod))
	envs := map[string]map[string]string{}
	for _, c := range pod.Spec.Containers {
		q := c.Resources.Limits[contract.ResourceGPUMem]
		if q.Value() <= 0 {
			continue
		}
		env, err := k.allocate(pod, c.Name, int(q.Value()))
		if err != nil {
			log.Info("Admission failed", "container", c.Name, "err", err)
			k.finish(pod, corev1.PodFailed, "UnexpectedAdmissionError", fmt.Sprintf("Allocate failed for container %s: %v", c.Name, err))
			k.release(pod.UID)
			return
		}
		envs[c.Name] = env
	}
	now := metav1.Now()
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
	if err := k.updateStatus(pod, status); err != nil {
		log.Error(err, "Reporting the pod running")
		return
	}
	var wg sync.WaitGroup
	var failures []string
	var fmu sync.Mutex
	fail := func(container string, err error, logPath string) {
		msg := fmt.Sprintf("container %s: %v", container, err)
		if tail := lastLines(logPath, 3); tail != "" {
			msg += ": " + tail
		}
		log.Info("Simulated job failed", "container", container, "err", err, "log", logPath)
		fmu.Lock()
		failures = append(failures, msg)
		fmu.Unlock()
	}
	for _, c := range pod.Spec.Containers {
		env, ok := envs[c.Name]
		if !ok {
			continue
		}
		cmd := exec.Command(k.train, c.Args...)
		cmd.Env = append(os.Environ(), job.EnvMockState+"="+k.state)
		for key, v := range env {
			cmd.Env = append(cmd.Env, key+"="+v)
		}
		// The job's output is kept, as a runtime keeps container logs.
		logPath := filepath.Join(k.logDir, pod.Namespace+"_"+pod.Name+"_"+c.Name+".log")
		out, err := os.Create(logPath)
		if err != nil {
			fail(c.Name, err, "")
			continue
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			out.Close()
			fail(c.Name, err, "")
			continue
		}
		k.writeCgroup(cmd.Process.Pid, pod, c.Name)
		k.mu.Lock()
		if rp := k.pods[pod.UID]; rp != nil {
			rp.procs = append(rp.procs, cmd)
		}
		k.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			out.Close()
			if err != nil {
				fail(c.Name, err, logPath)
			}
			_ = os.RemoveAll(filepath.Join(k.procRoot, strconv.Itoa(cmd.Process.Pid)))
		}()
	}
	if len(envs) == 0 {
		return // no GPU container: runs until deleted
	}
	go func() {
		wg.Wait()
		k.mu.Lock()
		rp := k.pods[pod.UID]
		stopped := rp == nil || rp.stopped
		k.mu.Unlock()
		if stopped {
			return
		}
		phase, reason, message := corev1.PodSucceeded, "", ""
		if len(failures) > 0 {
			phase, reason, message = corev1.PodFailed, "Error", strings.Join(failures, "; ")
		}
		k.finish(pod, phase, reason, message)
		k.release(pod.UID)
	}()
}

// allocate asks the plugin, as the kubelet's device manager does, for a
// preferred set among the free healthy devices, then allocates it.
func (k *kubelet) allocate(pod *corev1.Pod, container string, n int) (map[string]string, error) {
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
	ctx, cancel := context.WithTimeout(k.ctx, 30*time.Second)
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

// finish reports the pod's end.
func (k *kubelet) finish(pod *corev1.Pod, phase corev1.PodPhase, reason, message string) {
	cur, err := k.client.CoreV1().Pods(pod.Namespace).Get(k.ctx, pod.Name, metav1.GetOptions{})
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
	if err := k.updateStatus(cur, status); err != nil && k.ctx.Err() == nil {
		k.log.Error(err, "Reporting the pod's end", "pod", klog.KObj(pod))
	}
}

func (k *kubelet) updateStatus(pod *corev1.Pod, status *corev1.PodStatus) error {
	for range 5 {
		cur, err := k.client.CoreV1().Pods(pod.Namespace).Get(k.ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return nil
		}
		cur.Status = *status
		if _, err = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(k.ctx, cur, metav1.UpdateOptions{}); err == nil {
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

// stopPod kills a pod's jobs and frees its devices.
func (k *kubelet) stopPod(uid types.UID) {
	k.mu.Lock()
	rp := k.pods[uid]
	var procs []*exec.Cmd
	if rp != nil {
		rp.stopped = true
		procs = rp.procs
	}
	k.mu.Unlock()
	if rp == nil {
		return
	}
	for _, cmd := range procs {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}
	k.release(uid)
}

// servePodResources serves the kubelet's PodResources List.
func (k *kubelet) servePodResources() error {
	_ = os.Remove(k.podResourcesSocket)
	l, err := net.Listen("unix", k.podResourcesSocket)
	if err != nil {
		return err
	}
	k.prSrv = grpc.NewServer()
	podresourcesapi.RegisterPodResourcesListerServer(k.prSrv, &podResourcesServer{k: k})
	go func() { _ = k.prSrv.Serve(l) }()
	return nil
}

type podResourcesServer struct {
	podresourcesapi.UnimplementedPodResourcesListerServer
	k *kubelet
}

func (s *podResourcesServer) List(context.Context, *podresourcesapi.ListPodResourcesRequest) (*podresourcesapi.ListPodResourcesResponse, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	resp := &podresourcesapi.ListPodResourcesResponse{}
	for _, rp := range s.k.pods {
		if rp.stopped || len(rp.devices) == 0 {
			continue
		}
		pr := &podresourcesapi.PodResources{Name: rp.pod.Name, Namespace: rp.pod.Namespace}
		for name, ids := range rp.devices {
			pr.Containers = append(pr.Containers, &podresourcesapi.ContainerResources{Name: name, Devices: []*podresourcesapi.ContainerDevices{
				{ResourceName: string(contract.ResourceGPUMem), DeviceIds: ids},
			}})
		}
		resp.PodResources = append(resp.PodResources, pr)
	}
	return resp, nil
}

func ptr[T any](v T) *T { return &v }

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
