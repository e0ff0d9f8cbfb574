package deviceplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpupack/gpupack/contract"
)

// podResourcesHoldings asks the kubelet's PodResources API what containers
// hold: what waits then follows the kubelet across plugin and kubelet
// restarts.
type podResourcesHoldings struct {
	client podresourcesapi.PodResourcesListerClient
	byUUID map[string]int // card UUID -> index
	// kick asks reconciliation for a pass soon.
	kick chan<- struct{}
}

var _ holdings = (*podResourcesHoldings)(nil)

func (k *podResourcesHoldings) list(ctx context.Context, pods []*corev1.Pod) (held, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := k.client.List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("asking the kubelet's PodResources API what containers hold: %w", err)
	}
	byName := make(map[types.NamespacedName]*corev1.Pod, len(pods))
	for _, pod := range pods {
		byName[types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}] = pod
	}
	h := held{}
	for _, pr := range resp.GetPodResources() {
		pod := byName[types.NamespacedName{Namespace: pr.GetNamespace(), Name: pr.GetName()}]
		if pod == nil || !inPlay(pod) {
			continue
		}
		for _, c := range pr.GetContainers() {
			idx := containerIndex(pod, c.GetName())
			if idx < 0 {
				continue
			}
			var ids []string
			for _, d := range c.GetDevices() {
				if d.GetResourceName() == string(contract.ResourceGPUMem) {
					ids = append(ids, d.GetDeviceIds()...)
				}
			}
			if len(ids) == 0 {
				continue
			}
			cards, err := PerCard(ids, k.byUUID)
			if err != nil {
				return nil, fmt.Errorf("pod %s container %s: %w", klog.KObj(pod), c.GetName(), err)
			}
			h.add(podContainer{pod.UID, idx}, cards)
		}
	}
	return h, nil
}

// served asks reconciliation for a pass: the annotations follow once the
// kubelet has recorded the devices.
func (k *podResourcesHoldings) served(context.Context, plan) {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// servedHoldings is what this plugin remembers serving, on a node without
// the kubelet's PodResources API: a container it served holds the plan it
// was served from. A pod marked assigned of which it served nothing was
// served before the plugin restarted: its containers hold their plans.
type servedHoldings struct {
	client kubernetes.Interface // nil: no annotation patches

	mu    sync.Mutex
	byPod map[types.UID]map[int]bool // pod -> containers served
}

var _ holdings = (*servedHoldings)(nil)

func newServedHoldings(client kubernetes.Interface) *servedHoldings {
	return &servedHoldings{client: client, byPod: map[types.UID]map[int]bool{}}
}

func (s *servedHoldings) list(_ context.Context, pods []*corev1.Pod) (held, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := held{}
	for _, pl := range plans(pods) {
		served, known := s.byPod[pl.pod.UID]
		if served[pl.container] || !known && pl.pod.Annotations[contract.AnnotationAssigned] == "true" {
			h.add(pl.owner(), pl.cards)
		}
	}
	return h, nil
}

// served remembers the container and, once every GPU container of the pod
// was served, marks the pod assigned.
func (s *servedHoldings) served(ctx context.Context, pl plan) {
	s.mu.Lock()
	if s.byPod[pl.pod.UID] == nil {
		s.byPod[pl.pod.UID] = map[int]bool{}
	}
	s.byPod[pl.pod.UID][pl.container] = true
	all := len(s.byPod[pl.pod.UID]) == len(pl.podPlan)
	s.mu.Unlock()
	if !all || s.client == nil {
		return
	}
	pod := pl.pod
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID, "annotations": map[string]string{contract.AnnotationAssigned: "true"}}})
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if _, err := s.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		klog.FromContext(ctx).Error(err, "Marking the pod assigned", "pod", klog.KObj(pod))
	}
}
