package deviceplugin

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
	"k8s.io/apimachinery/pkg/types"
)

// Owner is the pod and container a process runs in, from its cgroup.
type Owner struct {
	PodUID types.UID
	// ContainerID is the runtime's id, without the "containerd://" scheme;
	// empty when the process sits in the pod's cgroup itself.
	ContainerID string
}

// ProcFS reads process cgroups under Root (the host's /proc, mounted into
// the plugin's container; a fake tree in tests; "" for /proc), through the
// Prometheus procfs library.
type ProcFS struct{ Root string }

// Owner maps a process to its pod. It returns an error for a process that
// is gone or runs outside every pod (a daemon on the host).
func (p ProcFS) Owner(pid int) (Owner, error) {
	root := p.Root
	if root == "" {
		root = procfs.DefaultMountPoint
	}
	fs, err := procfs.NewFS(root)
	if err != nil {
		return Owner{}, fmt.Errorf("process %d: %w", pid, err)
	}
	proc, err := fs.Proc(pid)
	if err != nil {
		return Owner{}, fmt.Errorf("process %d: %w", pid, err)
	}
	// One line per hierarchy (cgroup v1) or a single one (v2); the first
	// that names a pod decides.
	cgroups, err := proc.Cgroups()
	if err != nil {
		return Owner{}, fmt.Errorf("process %d: reading its cgroups: %w", pid, err)
	}
	for _, cg := range cgroups {
		if o, ok := parseCgroupPath(cg.Path); ok {
			return o, nil
		}
	}
	return Owner{}, fmt.Errorf("process %d runs in no pod (cgroup %s names none)", pid, filepath.Join(p.Root, strconv.Itoa(pid), "cgroup"))
}

// parseCgroupPath finds the pod UID and container id in a kubelet cgroup
// path, with the cgroupfs driver
// (/kubepods/burstable/pod<uid>/<container-id>) or the systemd driver
// (/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<container-id>.scope).
func parseCgroupPath(path string) (Owner, bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, s := range segs {
		uid, ok := podSegment(s)
		if !ok {
			continue
		}
		o := Owner{PodUID: types.UID(uid)}
		if i+1 < len(segs) {
			o.ContainerID = containerSegment(segs[i+1])
		}
		return o, true
	}
	return Owner{}, false
}

func podSegment(s string) (string, bool) {
	if rest, ok := strings.CutSuffix(s, ".slice"); ok {
		i := strings.LastIndex(rest, "-pod")
		if i < 0 || !strings.HasPrefix(rest, "kubepods") {
			return "", false
		}
		uid := strings.ReplaceAll(rest[i+len("-pod"):], "_", "-")
		return uid, uid != ""
	}
	if uid, ok := strings.CutPrefix(s, "pod"); ok && uid != "" {
		return uid, true
	}
	return "", false
}

// containerSegment strips the runtime's decoration: "cri-containerd-<id>.scope",
// "crio-<id>.scope", "docker-<id>.scope" or a bare "<id>".
func containerSegment(s string) string {
	s = strings.TrimSuffix(s, ".scope")
	if i := strings.LastIndex(s, "-"); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// containerID strips the scheme from a ContainerStatus's id.
func containerID(statusID string) string {
	if _, id, ok := strings.Cut(statusID, "://"); ok {
		return id
	}
	return statusID
}
