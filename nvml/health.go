package nvml

import (
	"context"
	"fmt"
	"slices"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// HealthEvent is a change of a card's health.
type HealthEvent struct {
	Index   int
	Healthy bool
	// Reason says why, for logs and events: "Xid 79", "double-bit ECC
	// error", "lost", "recovered".
	Reason string
}

// HealthOptions tune Health.
type HealthOptions struct {
	// IgnoredXids are Xids that report an application's fault, not the
	// card's (nil: DefaultIgnoredXids).
	IgnoredXids []uint64
	// Quiet is how long a card made unhealthy by an Xid or ECC error must
	// answer without a new critical error to be healthy again (0: 5 minutes).
	Quiet time.Duration
	// Poll is how often cards are probed (lost, recovered) and how long one
	// wait for events lasts (0: 5 seconds).
	Poll time.Duration
}

// DefaultIgnoredXids are application errors: graphics engine exception (13),
// MMU fault (31), reset channel verification (43), preemptive cleanup (45),
// video processor exception (68), context switch timeout (109).
var DefaultIgnoredXids = []uint64{13, 31, 43, 45, 68, 109}

func (o HealthOptions) withDefaults() HealthOptions {
	if o.IgnoredXids == nil {
		o.IgnoredXids = DefaultIgnoredXids
	}
	if o.Quiet == 0 {
		o.Quiet = 5 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = 5 * time.Second
	}
	return o
}

// criticalEvents are the event types that make a card unhealthy.
const criticalEvents = gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError

// Health watches NVML events and probes the cards; it sends an event each
// time a card's health changes, starting from all healthy, until ctx ends
// (then it closes the channel).
func (l *lib) Health(ctx context.Context, opts HealthOptions) (<-chan HealthEvent, error) {
	opts = opts.withDefaults()
	devs, err := l.handles()
	if err != nil {
		return nil, err
	}
	uuids := make([]string, len(devs))
	for i, d := range devs {
		u, ret := d.GetUUID()
		if ret != gonvml.SUCCESS {
			return nil, wrap(fmt.Sprintf("device %d UUID", i), ret)
		}
		uuids[i] = u
	}
	es, ret := l.nvml.EventSetCreate()
	if ret != gonvml.SUCCESS {
		return nil, wrap("creating the NVML event set", ret)
	}
	for i, d := range devs {
		supported, ret := d.GetSupportedEventTypes()
		if ret != gonvml.SUCCESS {
			continue // no events on this card: probing still sees it lost
		}
		if mask := supported & criticalEvents; mask != 0 {
			if ret := d.RegisterEvents(mask, es); ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
				es.Free()
				return nil, wrap(fmt.Sprintf("registering events of device %d", i), ret)
			}
		}
	}
	w := &watcher{opts: opts, devs: devs, uuids: uuids, es: es, out: make(chan HealthEvent, len(devs)),
		healthy: make([]bool, len(devs)), lastCritical: make([]time.Time, len(devs))}
	for i := range w.healthy {
		w.healthy[i] = true
	}
	go w.run(ctx)
	return w.out, nil
}

type watcher struct {
	opts         HealthOptions
	devs         []gonvml.Device
	uuids        []string
	es           gonvml.EventSet
	out          chan HealthEvent
	healthy      []bool
	lost         []bool
	lastCritical []time.Time
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.out)
	defer w.es.Free()
	w.lost = make([]bool, len(w.devs))
	w.probe(ctx)
	lastProbe := time.Now()
	for ctx.Err() == nil {
		ev, ret := w.es.Wait(uint32(w.opts.Poll / time.Millisecond))
		switch ret {
		case gonvml.SUCCESS:
			w.event(ctx, ev)
		case gonvml.ERROR_TIMEOUT:
		default:
			// The event set broke (a lost card, a driver reset): probing
			// tells which card; do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(w.opts.Poll):
			}
		}
		if time.Since(lastProbe) >= w.opts.Poll || ret != gonvml.SUCCESS {
			w.probe(ctx)
			lastProbe = time.Now()
		}
	}
}

func (w *watcher) event(ctx context.Context, ev gonvml.EventData) {
	if ev.EventType&criticalEvents == 0 {
		return
	}
	reason := "double-bit ECC error"
	if ev.EventType&gonvml.EventTypeXidCriticalError != 0 {
		if slices.Contains(w.opts.IgnoredXids, ev.EventData) {
			return
		}
		reason = fmt.Sprintf("Xid %d", ev.EventData)
	}
	idx := -1
	if ev.Device != nil {
		if u, ret := ev.Device.GetUUID(); ret == gonvml.SUCCESS {
			idx = slices.Index(w.uuids, u)
		}
	}
	if idx < 0 {
		// An event NVML could not tie to a card: all of them are suspect.
		for i := range w.devs {
			w.mark(ctx, i, reason)
		}
		return
	}
	w.mark(ctx, idx, reason)
}

func (w *watcher) mark(ctx context.Context, i int, reason string) {
	w.lastCritical[i] = time.Now()
	w.set(ctx, i, false, reason)
}

// probe finds lost cards, and cards healthy again: answering, not lost, and
// quiet for opts.Quiet since their last critical error.
func (w *watcher) probe(ctx context.Context) {
	for i, d := range w.devs {
		_, ret := d.GetMemoryInfo()
		switch {
		case ret == gonvml.ERROR_GPU_IS_LOST:
			w.lost[i] = true
			w.set(ctx, i, false, "lost")
		case ret != gonvml.SUCCESS:
			// Transient: neither verdict.
		case !w.healthy[i] && (w.lost[i] || time.Since(w.lastCritical[i]) >= w.opts.Quiet):
			w.lost[i] = false
			w.set(ctx, i, true, "recovered")
		}
	}
}

func (w *watcher) set(ctx context.Context, i int, healthy bool, reason string) {
	if w.healthy[i] == healthy {
		return
	}
	w.healthy[i] = healthy
	select {
	case w.out <- HealthEvent{Index: i, Healthy: healthy, Reason: reason}:
	case <-ctx.Done():
	}
}
