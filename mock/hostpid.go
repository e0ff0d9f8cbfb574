package mock

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// hostPIDs turns the processes recorded in the state into what NVML
// reports: the processes that run, under their host PIDs (the PIDs of the
// namespace the host's /proc shows), as the real driver does.
//
// A record of the reader's own PID namespace, when that namespace is the
// host's (the simulated nodes, where plugin and jobs run on the host), is
// reported as it is, alive while kill(pid, 0) finds it. Any other record
// (a job in a container) is looked for under the host's /proc: the
// process whose NSpid ends with the recorded PID and whose start time is
// the recorded one. The answer is kept, and each read checks the host
// PID's start time again: a process gone or replaced is not reported.
type hostPIDs struct {
	// root is the host's /proc as the reader sees it.
	root string
	// selfNS is the reader's PID namespace; 0 when unknown, and then every
	// record is taken as one of the reader's namespace (as before
	// namespaces were recorded).
	selfNS uint64
	// nested: the reader's PID namespace is below the one root shows (the
	// device plugin in a pod, the host's /proc mounted in).
	nested bool
	// alive reports whether a PID of the reader's namespace runs.
	alive func(pid int) bool
	log   klog.Logger

	mu    sync.Mutex
	cache map[Identity]*lookup
	swept time.Time
}

// lookup is the answer of a search for a recorded process.
type lookup struct {
	// host is its host PID; 0: not found when checked.
	host          int
	checked, used time.Time
}

const (
	// rescanAfter: a process not found is looked for again after this (a
	// dead one is never found, so a stale record costs a scan this often).
	rescanAfter = 10 * time.Second
	// forgetAfter: answers not asked for this long are dropped.
	forgetAfter = 10 * time.Minute
)

func newHostPIDs(root string, log klog.Logger) *hostPIDs {
	h := &hostPIDs{root: root, alive: alive, log: log, cache: map[Identity]*lookup{}}
	ns, err := readPIDNamespace("/proc/self/ns/pid")
	if err != nil {
		log.Info("Own PID namespace unknown: recorded PIDs are taken as this namespace's", "err", err)
	}
	h.selfNS = ns
	// A reader in the namespace root shows has one PID there; a reader in a
	// namespace below it, one per level. A fake tree without self (the
	// simulated nodes keep only cgroup files there) is the reader's own.
	if pids, err := readNSpid(filepath.Join(root, "self", "status")); err == nil && len(pids) > 1 {
		h.nested = true
	}
	return h
}

// alive reports whether a PID of the caller's namespace runs.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// asIs reports whether a record's PID is a PID of the reader's namespace,
// which is the host's.
func (h *hostPIDs) asIs(p Process) bool {
	return !h.nested && (p.PIDNamespace == 0 || h.selfNS == 0 || p.PIDNamespace == h.selfNS)
}

// report returns the recorded processes that run, in order, each with its
// host PID.
func (h *hostPIDs) report(ps []Process) []Process {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	var missing []Identity
	for _, p := range ps {
		if !h.searched(p) {
			continue
		}
		if l := h.cache[p.Identity()]; l == nil || (l.host == 0 && now.Sub(l.checked) >= rescanAfter) {
			missing = append(missing, p.Identity())
		}
	}
	if len(missing) > 0 {
		h.scan(missing, now)
	}
	out := make([]Process, 0, len(ps))
	for _, p := range ps {
		if pid, ok := h.hostPID(p, now); ok {
			p.PID = pid
			out = append(out, p)
		}
	}
	h.sweep(now)
	return out
}

// searched reports whether a record's host PID is found by a search of the
// host's /proc.
func (h *hostPIDs) searched(p Process) bool {
	return !h.asIs(p) && p.PIDNamespace != 0 && p.StartTime != 0
}

// hostPID is a record's host PID, if its process runs.
func (h *hostPIDs) hostPID(p Process, now time.Time) (int, bool) {
	switch {
	case h.asIs(p):
		return p.PID, h.alive(p.PID) && h.startedAt(p.PID, p.StartTime, true)
	case p.PIDNamespace == 0:
		// A host PID (written before namespaces were recorded), read from
		// below: kill would reach the reader's namespace, not the host's.
		return p.PID, h.startedAt(p.PID, p.StartTime, false)
	case p.StartTime == 0:
		// Nothing tells it from another process with its PID.
		h.log.V(4).Info("Recorded process has a PID namespace but no start time: not reported", "process", p.Identity())
		return 0, false
	}
	l := h.cache[p.Identity()]
	if l == nil || l.host == 0 {
		return 0, false
	}
	l.used = now
	if !h.startedAt(l.host, p.StartTime, false) {
		h.log.V(4).Info("Recorded process ended", "process", p.Identity(), "hostPID", l.host)
		l.host, l.checked = 0, now
		return 0, false
	}
	return l.host, true
}

// startedAt reports whether host PID pid runs and started at start (any
// start when 0). unknownOK answers when its stat cannot be read (a fake
// /proc holding only cgroup files).
func (h *hostPIDs) startedAt(pid int, start uint64, unknownOK bool) bool {
	if pid <= 0 {
		return false
	}
	got, err := readStartTime(procPath(h.root, pid, "stat"))
	if err != nil {
		return unknownOK
	}
	return start == 0 || got == start
}

// scan looks for processes under the host's /proc and records the answers.
// Stat comes first, as it is cheaper than status and its start time rules
// out nearly every process.
func (h *hostPIDs) scan(ids []Identity, now time.Time) {
	byStart := map[uint64][]Identity{}
	for _, id := range ids {
		byStart[id.StartTime] = append(byStart[id.StartTime], id)
	}
	found := map[Identity][]int{}
	entries, err := os.ReadDir(h.root)
	if err != nil {
		h.log.Error(err, "Listing the host's processes", "procRoot", h.root)
	}
	for _, e := range entries {
		pid, ok := pidDir(e.Name())
		if !ok {
			continue
		}
		start, err := readStartTime(procPath(h.root, pid, "stat"))
		if err != nil {
			continue // ended meanwhile, or not a process
		}
		cands := byStart[start]
		if len(cands) == 0 {
			continue
		}
		nspid, err := readNSpid(procPath(h.root, pid, "status"))
		if err != nil {
			continue
		}
		inner := nspid[len(nspid)-1]
		// The namespace link is readable only with ptrace access to the
		// process (the plugin drops every capability): when it is not, the
		// PID and the start time decide.
		ns, nsErr := readPIDNamespace(procPath(h.root, pid, filepath.Join("ns", "pid")))
		for _, id := range cands {
			if id.PID == inner && (nsErr != nil || ns == id.PIDNamespace) {
				found[id] = append(found[id], pid)
			}
		}
	}
	for _, id := range ids {
		l := h.cache[id]
		if l == nil {
			l = &lookup{}
			h.cache[id] = l
		}
		l.host, l.checked, l.used = 0, now, now
		switch hosts := found[id]; len(hosts) {
		case 1:
			l.host = hosts[0]
			h.log.V(4).Info("Found a recorded process", "process", id, "hostPID", l.host)
		case 0:
			h.log.V(4).Info("Recorded process not running", "process", id)
		default:
			h.log.V(2).Info("Recorded process matches several host processes: not reported", "process", id, "hostPIDs", hosts)
		}
	}
}

// sweep drops the answers nobody asked for lately.
func (h *hostPIDs) sweep(now time.Time) {
	if now.Sub(h.swept) < time.Minute {
		return
	}
	h.swept = now
	for id, l := range h.cache {
		if now.Sub(l.used) > forgetAfter {
			delete(h.cache, id)
		}
	}
}

// pidDir reads a /proc entry's name as a PID.
func pidDir(name string) (int, bool) {
	if name == "" || strings.TrimLeft(name, "0123456789") != "" {
		return 0, false
	}
	pid, err := strconv.Atoi(name)
	return pid, err == nil && pid > 0
}
