package deviceplugin

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseCgroupPath(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, path string
		want       Owner
		ok         bool
	}{
		{"cgroupfs", "/kubepods/burstable/pod5f1b-22/" + id, Owner{"5f1b-22", id}, true},
		{"cgroupfs guaranteed", "/kubepods/pod5f1b-22/" + id, Owner{"5f1b-22", id}, true},
		{"systemd containerd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f1b_22.slice/cri-containerd-" + id + ".scope",
			Owner{"5f1b-22", id}, true},
		{"systemd cri-o", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5f1b_22.slice/crio-" + id + ".scope", Owner{"5f1b-22", id}, true},
		{"systemd docker", "/kubepods.slice/kubepods-pod5f1b_22.slice/docker-" + id + ".scope", Owner{"5f1b-22", id}, true},
		{"the pod's own cgroup", "/kubepods/burstable/pod5f1b-22", Owner{"5f1b-22", ""}, true},
		{"a host service", "/system.slice/containerd.service", Owner{}, false},
		{"a user slice with -pod in a name", "/user.slice/user-0.slice/session-pod1.slice", Owner{}, false},
		{"root", "/", Owner{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseCgroupPath(tt.path)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseCgroupPath(%q) = %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// fakeProc writes <root>/<pid>/cgroup files.
func fakeProc(t *testing.T, root string, pid int, lines ...string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProcFSOwner(t *testing.T) {
	root := t.TempDir()
	// cgroup v1: the pod shows in several hierarchies.
	fakeProc(t, root, 10, "12:memory:/kubepods/burstable/poduid-1/abc", "1:name=systemd:/kubepods/burstable/poduid-1/abc")
	// cgroup v2.
	fakeProc(t, root, 11, "0::/kubepods.slice/kubepods-poduid_2.slice/cri-containerd-def.scope")
	fakeProc(t, root, 12, "0::/system.slice/sshd.service")
	fs := ProcFS{Root: root}
	for pid, want := range map[int]Owner{10: {"uid-1", "abc"}, 11: {"uid-2", "def"}} {
		got, err := fs.Owner(pid)
		if err != nil || got != want {
			t.Errorf("Owner(%d) = %+v, %v; want %+v", pid, got, err, want)
		}
	}
	if _, err := fs.Owner(12); err == nil || !strings.Contains(err.Error(), "runs in no pod") {
		t.Errorf("host process: err = %v", err)
	}
	if _, err := fs.Owner(13); err == nil {
		t.Error("a process that is gone has no owner")
	}
	// No root is the real /proc, where this test's process runs in no pod.
	if _, err := (ProcFS{}).Owner(os.Getpid()); err == nil || !strings.Contains(err.Error(), "runs in no pod") {
		t.Errorf("this process, through the default /proc: err = %v", err)
	}
}
