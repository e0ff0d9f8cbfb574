package deviceplugin

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// Event reasons of soft isolation.
const (
	ReasonOverShare        = "GPUMemoryOverShare"
	ReasonOverShareEvicted = "GPUMemoryOverShareEvicted"
)

// overKey names one container's overrun of one card.
type overKey struct {
	pod       types.UID
	container string
	card      int
}

// isolation remembers the overruns seen, across looks at the node.
type isolation struct {
	since   map[overKey]time.Time
	evicted map[types.UID]bool
}

// WatchUsage looks at the node every interval until ctx ends. A container
// that holds more than its share gets a Warning event on its pod the first
// time it is seen over; if it stays over for Options.EvictOverShareAfter
// (when set), its pod is evicted through the Eviction API, so disruption
// budgets are respected.
func (p *Plugin) WatchUsage(ctx context.Context, interval time.Duration) {
	iso := &isolation{since: map[overKey]time.Time{}, evicted: map[types.UID]bool{}}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.checkUsage(ctx, iso, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Plugin) checkUsage(ctx context.Context, iso *isolation, now time.Time) {
	log := klog.FromContext(ctx)
	u, err := p.Usage(ctx)
	if err != nil {
		log.Error(err, "Reading GPU usage")
		return
	}
	seen := map[overKey]bool{}
	present := map[types.UID]bool{}
	for _, c := range u.Containers {
		present[c.Pod.UID] = true
		if !c.Over() {
			continue
		}
		k := overKey{c.Pod.UID, c.Container, c.Card}
		seen[k] = true
		first, ok := iso.since[k]
		if !ok {
			iso.since[k] = now
			first = now
			log.Info("Container over its GPU memory share", "pod", klog.KObj(c.Pod), "container", c.Container,
				"card", c.Card, "usedMiB", c.UsedMiB, "limitMiB", c.LimitMiB)
			p.event(c.Pod, corev1.EventTypeWarning, ReasonOverShare, "%s", c)
		}
		if p.opts.EvictOverShareAfter > 0 && now.Sub(first) >= p.opts.EvictOverShareAfter && !iso.evicted[c.Pod.UID] {
			if err := p.evict(ctx, c, now.Sub(first)); err != nil {
				log.Error(err, "Evicting a pod over its GPU memory share", "pod", klog.KObj(c.Pod))
				continue
			}
			iso.evicted[c.Pod.UID] = true
		}
	}
	for k := range iso.since {
		if !seen[k] {
			delete(iso.since, k)
		}
	}
	for uid := range iso.evicted {
		if !present[uid] {
			delete(iso.evicted, uid) // gone: forget it
		}
	}
}

// evict asks the API server to evict the pod of a container over its share.
func (p *Plugin) evict(ctx context.Context, c ContainerUsage, over time.Duration) error {
	if p.client == nil {
		return nil
	}
	p.event(c.Pod, corev1.EventTypeWarning, ReasonOverShareEvicted, "Evicting: %s for %s (limit %s)",
		c, over.Round(time.Second), p.opts.EvictOverShareAfter)
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	err := p.client.CoreV1().Pods(c.Pod.Namespace).EvictV1(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: c.Pod.Name, Namespace: c.Pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.Pod.UID}},
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		p.metrics.evictions.Inc()
		klog.FromContext(ctx).Info("Evicted a pod over its GPU memory share", "pod", klog.KObj(c.Pod), "container", c.Container, "over", over)
	}
	return err
}

func (p *Plugin) event(pod *corev1.Pod, kind, reason, format string, args ...any) {
	if p.opts.Recorder != nil {
		p.opts.Recorder.Eventf(pod, kind, reason, format, args...)
	}
}
