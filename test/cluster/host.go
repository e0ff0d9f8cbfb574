package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A real node changes the host it runs on. Everything it changes is listed
// here, and undone by host.release, whatever state the nodes were left in:
//   - a bridge, gpk<slot>, holding the control plane's address and a veth
//     to each real node (the nodes' own network namespaces, and their
//     iptables rules, sysctls and pod networks, end with their processes);
//   - a cgroup per node in every cgroup hierarchy (the node's kubelet puts
//     kubepods under it);
//   - the kernel settings the kubelet sets on start (setupKernelTunables),
//     restored to what they were.
// The nodes' mounts live in mount namespaces of their own and end with them.

// slots are how many clusters with real nodes one machine can hold at once.
const slots = 16

// kubeletSysctls are the host-wide settings the kubelet changes when it
// starts; they are put back when the cluster ends.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// host is what one cluster holds of this machine for its real nodes.
type host struct {
	slot   int
	lock   *os.File
	bridge string
	sysctl map[string]string // path under /proc/sys -> value before
}

// The addresses of slot s: the bridge (control plane) at 10.213.s.1/24,
// node i at 10.213.s.(10+i), node i's pods in 10.214.(16s+i).0/24. They are
// on this machine only: nothing routes them out (the nodes' namespaces have
// no default route).
func (h *host) apiAddress() netip.Addr { return netip.AddrFrom4([4]byte{10, 213, byte(h.slot), 1}) }
func (h *host) nodeAddress(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 213, byte(h.slot), byte(10 + i)})
}
func (h *host) podCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 214, byte(16*h.slot + i), 0}), 24)
}
func (h *host) clusterCIDR() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 214, byte(16 * h.slot), 0}), 20)
}

// maxRealNodes is how many real nodes one cluster may have.
const maxRealNodes = 16

// lockDir holds the slots' locks (a flock is released when its holder
// dies, so a crashed run's slot is free again).
const lockDir = "/run/gpupack"

// acquireHost takes a free slot and sets up its bridge, after removing what
// a crashed run may have left in it.
func acquireHost() (*host, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, err
	}
	for s := range slots {
		f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("slot-%d.lock", s)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		h := &host{slot: s, lock: f, bridge: fmt.Sprintf("gpk%d", s), sysctl: map[string]string{}}
		h.sweep()
		if err := h.setup(); err != nil {
			h.release()
			return nil, err
		}
		return h, nil
	}
	return nil, fmt.Errorf("all %d slots for clusters with real nodes are taken (locks in %s)", slots, lockDir)
}

func (h *host) setup() error {
	for _, key := range kubeletSysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			return fmt.Errorf("reading sysctl %s: %w", key, err)
		}
		h.sysctl[key] = strings.TrimSpace(string(b))
	}
	// Ranges already routed here (a real network) are not ours to take.
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, want := range []netip.Prefix{netip.PrefixFrom(h.apiAddress(), 24), h.clusterCIDR()} {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			dst := f[0]
			if dst == "local" || dst == "broadcast" {
				if len(f) < 2 {
					continue
				}
				dst = f[1]
			}
			if !strings.Contains(dst, "/") {
				dst += "/32"
			}
			p, err := netip.ParsePrefix(dst)
			if err == nil && p.Bits() > 0 && p.Overlaps(want) {
				return fmt.Errorf("%s is already routed on this machine (%q): real nodes need it free", want, strings.TrimSpace(line))
			}
		}
	}
	return run("ip", "link", "add", h.bridge, "type", "bridge").
		then("ip", "addr", "add", netip.PrefixFrom(h.apiAddress(), 24).String(), "dev", h.bridge).
		then("ip", "link", "set", h.bridge, "up").err
}

// release undoes everything: the bridge (and its routes), the nodes'
// cgroups, the kernel settings; then frees the slot.
func (h *host) release() {
	h.sweep()
	for key, v := range h.sysctl {
		_ = os.WriteFile(filepath.Join("/proc/sys", key), []byte(v), 0o644)
	}
	if h.lock != nil {
		h.lock.Close()
	}
}

// sweep removes the slot's bridge and cgroups, which only a run holding the
// slot's lock creates.
func (h *host) sweep() {
	if _, err := os.Stat(filepath.Join("/sys/class/net", h.bridge)); err == nil {
		_ = exec.Command("ip", "link", "del", h.bridge).Run()
	}
	for _, root := range cgroupRoots() {
		matches, _ := filepath.Glob(filepath.Join(root, h.cgroupPrefix()+"*"))
		for _, m := range matches {
			removeCgroup(m)
		}
	}
}

// cgroupPrefix names the slot's node cgroups (/gpupack-<slot>-<node>).
func (h *host) cgroupPrefix() string { return fmt.Sprintf("gpupack-%d-", h.slot) }

// cgroupRoots are the mounted cgroup hierarchies (v1 controllers, named
// hierarchies and the v2 tree), from /proc/self/mountinfo.
func cgroupRoots() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var roots []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, after := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(after) == 0 || (after[0] != "cgroup" && after[0] != "cgroup2") {
			continue
		}
		roots = append(roots, fields[4])
	}
	return roots
}

// makeCgroup creates name (a path) under every hierarchy, level by level:
// a cpuset cgroup needs its parent's CPUs and memory nodes before anything
// can join it.
func makeCgroup(name string) error {
	for _, root := range cgroupRoots() {
		dir := root
		for _, part := range strings.Split(strings.Trim(name, "/"), "/") {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("creating cgroup %s: %w", dir, err)
			}
			for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
				value, err := os.ReadFile(filepath.Join(parent, file))
				if err != nil {
					continue // not the cpuset hierarchy
				}
				if err := os.WriteFile(filepath.Join(dir, file), value, 0o644); err != nil {
					return fmt.Errorf("setting %s of %s: %w", file, dir, err)
				}
			}
		}
	}
	return nil
}

// killCgroup kills every process in the cgroup tree at dir (SIGKILL, again
// until none is left: a process may fork while it is killed).
func killCgroup(dir string) {
	for range 50 {
		pids := cgroupProcs(dir)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cgroupProcs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeCgroup kills what is left in the cgroup tree at dir and removes its
// folders, deepest first (a cgroup folder goes with rmdir, not unlink).
func removeCgroup(dir string) {
	killCgroup(dir)
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	deadline := time.Now().Add(10 * time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := syscall.Rmdir(dirs[i])
			if err == nil || errors.Is(err, syscall.ENOENT) || time.Now().After(deadline) {
				break
			}
			// EBUSY while the kernel finishes the processes' exit.
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// steps runs commands one after the other until one fails.
type steps struct{ err error }

func run(name string, args ...string) *steps { return (&steps{}).then(name, args...) }

func (s *steps) then(name string, args ...string) *steps {
	if s.err != nil {
		return s
	}
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		s.err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return s
}

// CanRunRealNodes says whether this machine can run real nodes, and if not
// why: they need root, Linux cgroups, the ip, nsenter and unshare commands,
// and containerd, runc, the CNI plugins and iptables (make node-deps
// installs Debian's).
func CanRunRealNodes() error {
	if os.Geteuid() != 0 {
		return errors.New("real nodes need root (a kubelet and containerd run them)")
	}
	if len(cgroupRoots()) == 0 {
		return errors.New("real nodes need cgroups, and none is mounted")
	}
	for _, bin := range []string{"ip", "nsenter", "unshare", "mount", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("real nodes need %s on the PATH (make node-deps installs containerd, runc, the CNI plugins and iptables from Debian's packages)", bin)
		}
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "bridge")); err != nil {
		return fmt.Errorf("real nodes need the CNI plugins in %s (make node-deps installs them)", cniBinDir)
	}
	return nil
}

// cniBinDir is where Debian's containernetworking-plugins puts them.
const cniBinDir = "/usr/lib/cni"
