package deviceplugin

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/nvml"
)

// Event reasons of card health, recorded on the node.
const (
	ReasonGPUUnhealthy = "GPUUnhealthy"
	ReasonGPUHealthy   = "GPUHealthy"
)

// publishBackoff paces the retries of a failed publish of the node's cards:
// 0.5 s after the first failure, doubling (with 10% jitter) up to 30 s
// apart, then every 30 s until it lands.
var publishBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 8, Cap: 30 * time.Second}

// publishStartupFor is how long the first publish, at start-up, is
// retried before the daemon gives up.
const publishStartupFor = time.Minute

// WatchHealth applies NVML health events until ctx ends. Each time a card
// turns unhealthy or recovers, it records an event on the node (a Warning
// GPUUnhealthy, a Normal GPUHealthy) and publishes the node's cards,
// retrying a failed publish with backoff; a later change supersedes a
// publish still being retried, so the node always ends with the newest
// cards.
func (p *Plugin) WatchHealth(ctx context.Context) error {
	events, err := p.nvml.Health(ctx, p.opts.Health)
	if err != nil {
		return err
	}
	log := klog.FromContext(ctx)
	changed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() { p.publishChanges(pctx, changed) })
	for e := range events {
		log.Info("Card health changed", "node", p.opts.NodeName, "card", e.Index, "healthy", e.Healthy, "reason", e.Reason)
		c, ok := p.setHealth(e.Index, e.Healthy)
		if !ok {
			continue
		}
		p.healthEvent(c, e)
		select {
		case changed <- struct{}{}:
		default: // a publish is already due; it reads the newest cards
		}
	}
	return nil
}

// setHealth records a card's health and tells every ListAndWatch stream.
// It returns the card and whether its health changed.
func (p *Plugin) setHealth(index int, healthy bool) (card, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.card(index)
	if c == nil || c.healthy == healthy {
		return card{}, false
	}
	c.healthy = healthy
	for ch := range p.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return *c, true
}

// healthEvent records a change of a card's health on the node, as the
// kubelet records its own events on it (the node's name as its UID).
func (p *Plugin) healthEvent(c card, e nvml.HealthEvent) {
	if p.opts.Recorder == nil {
		return
	}
	node := &corev1.ObjectReference{Kind: "Node", Name: p.opts.NodeName, UID: types.UID(p.opts.NodeName)}
	if e.Healthy {
		p.opts.Recorder.Eventf(node, corev1.EventTypeNormal, ReasonGPUHealthy,
			"Card %d (%s, %s) is healthy again (%s): its %s devices are back", c.Index, c.UUID, c.Model, e.Reason, contract.ResourceGPUMem)
		return
	}
	p.opts.Recorder.Eventf(node, corev1.EventTypeWarning, ReasonGPUUnhealthy,
		"Card %d (%s, %s) is unhealthy (%s): its %s devices are withdrawn until it recovers", c.Index, c.UUID, c.Model, e.Reason, contract.ResourceGPUMem)
}

// publishChanges publishes the node's cards after each change signalled
// on changed, until ctx ends. A change that comes while a failed publish
// is being retried supersedes it: the retry stops, and the newest cards are
// published at once, so an older state never lands after a newer one.
func (p *Plugin) publishChanges(ctx context.Context, changed <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		for p.publishUnlessSuperseded(ctx, changed) {
		}
	}
}

// publishUnlessSuperseded publishes the node's cards, retrying until the
// publish lands or ctx ends (false), or a newer change comes (true).
func (p *Plugin) publishUnlessSuperseded(ctx context.Context, changed <-chan struct{}) (superseded bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.publishRetrying(ctx) // fails only when ctx ends
	}()
	select {
	case <-done:
		return false
	case <-changed:
		klog.FromContext(ctx).V(4).Info("The node's cards changed again: publishing the newest", "node", p.opts.NodeName)
		cancel()
		<-done
		return true
	}
}

// publishRetrying publishes the node's cards, retrying a failure after
// each delay of p.publishBackoff, until it lands or ctx ends. Each attempt
// reads the cards afresh. It returns the last failure when ctx ends first.
func (p *Plugin) publishRetrying(ctx context.Context) error {
	log := klog.FromContext(ctx)
	var last error
	err := p.publishBackoff.DelayFunc().Until(ctx, true, true, func(ctx context.Context) (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		if last = p.PublishNode(rctx); last != nil {
			log.Error(last, "Publishing the node's cards; retrying with backoff", "node", p.opts.NodeName)
			return false, nil
		}
		return true, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (retried until: %w)", last, err)
	}
	return err
}
