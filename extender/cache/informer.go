package cache

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	toolscache "k8s.io/client-go/tools/cache"
)

// Watch registers the cache on the factory's node and pod informers and
// returns their HasSynced functions. Start the factory afterwards.
func (c *Cache) Watch(factory informers.SharedInformerFactory) ([]toolscache.InformerSynced, error) {
	nodes := factory.Core().V1().Nodes().Informer()
	pods := factory.Core().V1().Pods().Informer()
	nr, err := nodes.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.onNode(obj) },
		UpdateFunc: func(_, obj any) { c.onNode(obj) },
		DeleteFunc: func(obj any) {
			if n, ok := deleted[*corev1.Node](obj); ok {
				c.DeleteNode(n.Name)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	pr, err := pods.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.onPod(obj) },
		UpdateFunc: func(_, obj any) { c.onPod(obj) },
		DeleteFunc: func(obj any) {
			if p, ok := deleted[*corev1.Pod](obj); ok {
				c.DeletePod(p.UID)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return []toolscache.InformerSynced{nr.HasSynced, pr.HasSynced}, nil
}

func (c *Cache) onNode(obj any) {
	if n, ok := obj.(*corev1.Node); ok {
		c.SetNode(n)
	}
}

func (c *Cache) onPod(obj any) {
	if p, ok := obj.(*corev1.Pod); ok {
		c.SetPod(p)
	}
}

// deleted unwraps a delete notification, tombstones included.
func deleted[T any](obj any) (T, bool) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	v, ok := obj.(T)
	return v, ok
}
