package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
	dpserver "k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/plugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
)

// kubelet is a test kubelet for one simulated node. Its device-plugin side
// is the kubelet's own registration server and plugin client; around it, it
// does what a kubelet does for GPU pods: keeps the node's gpu-mem capacity
// from ListAndWatch, asks the plugin for a preferred allocation and then
// Allocate for each GPU container of each pod bound to the node, starts the
// simulated training job with the environment Allocate returned, reports
// the pod Running and then Succeeded or Failed, frees the devices, and
// serves the PodResources API.
//
// Its lifecycle has one rule: nothing it starts outlives it. Once the
// context given to run ends, no job starts; wait returns once every job it
// started has been killed (its whole process group) and reaped, and every
// goroutine it started has returned. The informer's handlers only queue the
// pod's key, so they never block; one worker syncs the keys (sync).
type kubelet struct {
	node                string
	client              kubernetes.Interface
	pluginDir, procRoot string
	podResourcesSocket  string
	train, state        string
	logDir              string // the simulated jobs' output, one file per container
	log                 klog.Logger

	podStore        cache.Store                      // the informer's pods of this node
	queue           workqueue.TypedInterface[string] // keys (namespace/name) of pods to sync
	capacityChanged chan struct{}                    // ListAndWatch brought a new device list
	wg              sync.WaitGroup                   // the worker, the capacity reporter, awaitJobs, the jobs' reapers
	ended           chan struct{}                    // closed when wait may return

	mu       sync.Mutex
	closing  bool // run's context ended: no pod is admitted and no job starts
	srv      dpserver.Server
	prSrv    *grpc.Server
	plugin   dpserver.DevicePlugin
	resource string                    // the plugin's resource name
	devices  map[string]bool           // id -> healthy
	taken    map[string]types.UID      // id -> pod holding it
	pods     map[types.UID]*runningPod // admitted pods
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

// PluginListAndWatchReceiver keeps the device list; reportCapacity then
// writes the node's capacity from it, so that the plugin's stream never
// waits on the API server.
func (k *kubelet) PluginListAndWatchReceiver(_ klog.Logger, resource string, resp *api.ListAndWatchResponse) {
	k.mu.Lock()
	k.resource = resource
	k.devices = map[string]bool{}
	for _, d := range resp.Devices {
		k.devices[d.ID] = d.Health == api.Healthy
	}
	k.mu.Unlock()
	select {
	case k.capacityChanged <- struct{}{}:
	default: // a report is pending: it reads the newest list
	}
}

// reportCapacity writes the node's capacity (all devices) and allocatable
// (healthy ones) each time the device list changed, as the kubelet's
// device manager does, until ctx ends.
func (k *kubelet) reportCapacity(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.capacityChanged:
		}
		k.mu.Lock()
		resource, total, healthy := k.resource, len(k.devices), 0
		for _, ok := range k.devices {
			if ok {
				healthy++
			}
		}
		k.mu.Unlock()
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{
			"capacity":    map[string]string{resource: strconv.Itoa(total)},
			"allocatable": map[string]string{resource: strconv.Itoa(healthy)},
		}})
		if _, err := k.client.CoreV1().Nodes().Patch(ctx, k.node, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil && ctx.Err() == nil {
			k.log.Error(err, "Updating the node's GPU capacity")
		}
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

// run starts the registration and PodResources servers and the pods'
// worker, and returns; they serve until ctx ends, then shutdown ends them
// (see wait).
func (k *kubelet) run(ctx context.Context, informer cache.SharedIndexInformer) error {
	k.devices, k.taken, k.pods = map[string]bool{}, map[string]types.UID{}, map[types.UID]*runningPod{}
	k.podStore = informer.GetStore()
	k.queue = workqueue.NewTyped[string]()
	k.capacityChanged = make(chan struct{}, 1)
	k.ended = make(chan struct{})
	if err := k.startServers(informer); err != nil {
		k.queue.ShutDown()
		k.stopServers()
		return err
	}
	k.wg.Add(2)
	go func() {
		defer k.wg.Done()
		k.work(ctx)
	}()
	go func() {
		defer k.wg.Done()
		k.reportCapacity(ctx)
	}()
	go func() {
		<-ctx.Done()
		k.shutdown()
	}()
	return nil
}

// startServers starts the registration and PodResources servers, and
// subscribes to the informer.
func (k *kubelet) startServers(informer cache.SharedIndexInformer) error {
	if err := os.MkdirAll(k.pluginDir, 0o755); err != nil {
		return err
	}
	if err := k.startRegistration(); err != nil {
		return err
	}
	if err := k.servePodResources(); err != nil {
		return err
	}
	_, err := informer.AddEventHandler(k.handler())
	return err
}

// handler is what the kubelet subscribes to the informer: every event,
// a deletion's tombstone (cache.DeletedFinalStateUnknown) included, queues
// the pod's key and returns at once.
func (k *kubelet) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    k.enqueue,
		UpdateFunc: func(_, obj any) { k.enqueue(obj) },
		DeleteFunc: k.enqueue,
	}
}

func (k *kubelet) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		k.log.Error(err, "A pod event without a key")
		return
	}
	k.queue.Add(key) // never blocks; after shutdown, adds nothing
}

// work syncs the queued keys, one at a time, until the queue shuts down.
func (k *kubelet) work(ctx context.Context) {
	for {
		key, shut := k.queue.Get()
		if shut {
			return
		}
		if ctx.Err() == nil {
			k.sync(ctx, key)
		}
		k.queue.Done(key)
	}
}

// sync makes what the kubelet runs under a pod's key (namespace/name)
// agree with the pod the informer holds for it:
//   - a pod it runs that is no longer there (deleted, or replaced by a pod
//     of the same name) is stopped and forgotten;
//   - a pod being deleted is stopped, and its deletion finished;
//   - a pending pod new to the kubelet is admitted.
//
// Anything else (a pod running or ended) needs nothing.
func (k *kubelet) sync(ctx context.Context, key string) {
	var pod *corev1.Pod
	if obj, exists, err := k.podStore.GetByKey(key); err == nil && exists {
		pod = obj.(*corev1.Pod)
	}
	for _, uid := range k.podsNamed(key) {
		if pod == nil || uid != pod.UID {
			k.stopPod(uid)
			k.forget(uid)
		}
	}
	switch {
	case pod == nil:
	case pod.DeletionTimestamp != nil:
		k.stopPod(pod.UID)
		k.finishDeletion(ctx, pod)
	case pod.Status.Phase == corev1.PodPending || pod.Status.Phase == "":
		k.admit(ctx, pod)
	}
}

// podsNamed are the UIDs of the admitted pods whose key is key.
func (k *kubelet) podsNamed(key string) []types.UID {
	k.mu.Lock()
	defer k.mu.Unlock()
	var uids []types.UID
	for uid, rp := range k.pods {
		if cache.MetaObjectToName(rp.pod).String() == key {
			uids = append(uids, uid)
		}
	}
	return uids
}

// forget drops a stopped pod that is gone from the API.
func (k *kubelet) forget(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.pods, uid)
}

// finishDeletion deletes a pod being deleted at once, its jobs being dead,
// as the kubelet does once the pod's containers have stopped.
func (k *kubelet) finishDeletion(ctx context.Context, pod *corev1.Pod) {
	zero := int64(0)
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && ctx.Err() == nil {
		k.log.V(2).Info("Finishing a pod's deletion", "pod", klog.KObj(pod), "err", err)
	}
}

// shutdown ends the kubelet after its context: it shuts the queue (the
// handlers queue nothing more, the worker ends), closes the door to new
// jobs and kills every job (killAll), waits for the worker, the reporters
// and every job's reaping, then stops the servers.
func (k *kubelet) shutdown() {
	k.queue.ShutDown()
	k.killAll()
	k.wg.Wait()
	k.stopServers()
	close(k.ended)
}

// killAll marks the kubelet closing and every pod stopped, so that no pod
// is admitted and no job starts from now on (startJob checks under the same
// lock), and kills the jobs started so far.
func (k *kubelet) killAll() {
	k.mu.Lock()
	k.closing = true
	var jobs []*jobProcess
	for _, rp := range k.pods {
		rp.stopped = true
		jobs = append(jobs, rp.jobs...)
	}
	k.mu.Unlock()
	for _, j := range jobs {
		j.kill()
	}
}

// wait blocks until the kubelet has ended after run's context: every job
// killed and reaped, every goroutine returned, the servers stopped.
func (k *kubelet) wait() { <-k.ended }

// stopServers stops the registration and PodResources servers, those that
// started.
func (k *kubelet) stopServers() {
	k.mu.Lock()
	srv, prSrv := k.srv, k.prSrv
	k.mu.Unlock()
	if srv != nil {
		_ = srv.Stop(k.log)
	}
	if prSrv != nil {
		prSrv.Stop() // Serve returns
	}
}

// servePodResources serves the kubelet's PodResources List.
func (k *kubelet) servePodResources() error {
	_ = os.Remove(k.podResourcesSocket)
	l, err := net.Listen("unix", k.podResourcesSocket)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	podresourcesapi.RegisterPodResourcesListerServer(srv, &podResourcesServer{k: k})
	k.mu.Lock()
	k.prSrv = srv
	k.mu.Unlock()
	go func() { _ = srv.Serve(l) }() // until stopServers
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
