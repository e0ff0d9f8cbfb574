package deviceplugin

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// NodePods is the PodSource of a running plugin: an informer on the pods
// bound to one node, and the API server behind it for when the informer
// lags a bind.
type NodePods struct {
	node    string
	client  kubernetes.Interface
	lister  listersv1.PodLister
	factory informers.SharedInformerFactory
	synced  toolscache.InformerSynced
}

var _ PodSource = (*NodePods)(nil)

// NewNodePods watches the pods whose spec.nodeName is node.
func NewNodePods(client kubernetes.Interface, node string) *NodePods {
	selector := fields.OneTermEqualSelector("spec.nodeName", node).String()
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = selector }))
	inf := factory.Core().V1().Pods()
	return &NodePods{node: node, client: client, lister: inf.Lister(), factory: factory, synced: inf.Informer().HasSynced}
}

// Start runs the informer until ctx ends.
func (n *NodePods) Start(ctx context.Context) { n.factory.Start(ctx.Done()) }

// Shutdown waits for the informer to stop (after its context ended).
func (n *NodePods) Shutdown() { n.factory.Shutdown() }

// Synced reports whether the informer has listed the node's pods once.
func (n *NodePods) Synced() bool { return n.synced() }

// WaitForSync waits until the informer has synced or ctx ends.
func (n *NodePods) WaitForSync(ctx context.Context) bool {
	return toolscache.WaitForCacheSync(ctx.Done(), n.synced)
}

// Cached lists the node's pods from the informer.
func (n *NodePods) Cached() ([]*corev1.Pod, error) {
	return n.lister.List(labels.Everything())
}

// Live lists the node's pods from the API server.
func (n *NodePods) Live(ctx context.Context) ([]*corev1.Pod, error) {
	list, err := n.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", n.node, err)
	}
	out := make([]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}
