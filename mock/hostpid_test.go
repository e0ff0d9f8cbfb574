package mock

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/google/go-cmp/cmp"
	"k8s.io/klog/v2/ktesting"
)

// fakeStat is a /proc/<pid>/stat line with the given command and start
// time (field 22).
func fakeStat(pid int, comm string, start uint64) string {
	return fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 %d 1000000 100 18446744073709551615\n", pid, comm, pid, pid, start)
}

// fakeProc is a process under a fake host /proc.
type fakeProc struct {
	// nspid is its PID in each namespace, the host's first.
	nspid []int
	start uint64
	// stat and status replace the files when set (malformed ones).
	stat, status string
}

// writeFakeProcs makes a fake host /proc under root. self, when set, is the
// reader's NSpid there (several PIDs: a reader in a container).
func writeFakeProcs(t *testing.T, root string, procs []fakeProc, self []int) {
	t.Helper()
	write := func(dir, stat, status string) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nspid := func(pids []int) string {
		s := make([]string, len(pids))
		for i, p := range pids {
			s[i] = strconv.Itoa(p)
		}
		return "Name:\tjob\nUmask:\t0022\nState:\tS (sleeping)\nNSpid:\t" + strings.Join(s, "\t") + "\nPPid:\t1\n"
	}
	for _, p := range procs {
		host := p.nspid[0]
		stat, status := p.stat, p.status
		if stat == "" {
			stat = fakeStat(host, "python3 (train) job", p.start)
		}
		if status == "" {
			status = nspid(p.nspid)
		}
		write(filepath.Join(root, strconv.Itoa(host)), stat, status)
	}
	if self != nil {
		write(filepath.Join(root, "self"), fakeStat(self[0], "gpupack-device-plugin", 1), nspid(self))
	}
}

// reported is what the simulated NVML shows on card 0: PID -> MiB.
func reported(t *testing.T, iface nvml.Interface) map[int]int64 {
	t.Helper()
	d, ret := iface.DeviceGetHandleByIndex(0)
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	ps, ret := d.GetComputeRunningProcesses()
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	out := map[int]int64{}
	var sum uint64
	for _, p := range ps {
		out[int(p.Pid)] = int64(p.UsedGpuMemory >> 20)
		sum += p.UsedGpuMemory
	}
	// The card's memory in use is that of the processes shown.
	if m, ret := d.GetMemoryInfo(); ret != nvml.SUCCESS || m.Used != sum {
		t.Errorf("card 0 uses %d bytes (%v), its processes %d", m.Used, ret, sum)
	}
	return out
}

func TestReportsHostPIDs(t *testing.T) {
	self, err := SelfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	// Namespaces of containers (inodes unlike this test's own).
	const nsA, nsB = 4026599001, 4026599002
	tests := []struct {
		name string
		// realProc reads this machine's /proc instead of a fake tree.
		realProc bool
		procs    []fakeProc
		// readerNSpid: the reader runs in a container (its NSpid under the
		// host's /proc); nil: on the host.
		readerNSpid []int
		records     []Process
		want        map[int]int64 // host PID -> MiB
	}{
		{
			name: "a job in a container is reported under its host PID",
			procs: []fakeProc{
				{nspid: []int{4242, 7}, start: 5000},
				{nspid: []int{4243, 7}, start: 6000},                     // PID 7 of another container, started later
				{nspid: []int{4244, 8}, start: 5000},                     // started in the same tick, another PID
				{nspid: []int{4245}, stat: "4245 (x", status: "garbage"}, // malformed: skipped
				{nspid: []int{4246}, stat: fakeStat(4246, "x", 5000), status: "NSpid:\tseven\n"},
			},
			records: []Process{{PIDNamespace: nsA, PID: 7, StartTime: 5000, UsedMiB: 1000}},
			want:    map[int]int64{4242: 1000},
		},
		{
			name: "two jobs that are both PID 1 of their containers",
			procs: []fakeProc{
				{nspid: []int{5001, 1}, start: 5000},
				{nspid: []int{5002, 1}, start: 5100},
			},
			records: []Process{
				{PIDNamespace: nsA, PID: 1, StartTime: 5000, UsedMiB: 1000},
				{PIDNamespace: nsB, PID: 1, StartTime: 5100, UsedMiB: 2000},
			},
			want: map[int]int64{5001: 1000, 5002: 2000},
		},
		{
			name:    "a job that ended is not reported",
			procs:   []fakeProc{{nspid: []int{4242, 9}, start: 5000}},
			records: []Process{{PIDNamespace: nsA, PID: 7, StartTime: 5000, UsedMiB: 1000}},
			want:    map[int]int64{},
		},
		{
			name:    "its PID reused by a later process is not it",
			procs:   []fakeProc{{nspid: []int{4242, 7}, start: 8000}},
			records: []Process{{PIDNamespace: nsA, PID: 7, StartTime: 5000, UsedMiB: 1000}},
			want:    map[int]int64{},
		},
		{
			name:    "a record with a namespace but no start time is not reported",
			procs:   []fakeProc{{nspid: []int{4242, 7}, start: 5000}},
			records: []Process{{PIDNamespace: nsA, PID: 7, UsedMiB: 1000}},
			want:    map[int]int64{},
		},
		{
			// The simulated nodes: plugin and jobs on the host, the proc
			// root a fake tree of cgroup files only.
			name: "an old record without a namespace is a host PID, alive while kill finds it",
			records: []Process{
				{PID: os.Getpid(), UsedMiB: 1000},
				{PID: 1 << 30, UsedMiB: 2000}, // no such process
			},
			want: map[int]int64{os.Getpid(): 1000},
		},
		{
			name:    "a record of the reader's own namespace is reported as it is",
			records: []Process{{PIDNamespace: self.PIDNamespace, PID: os.Getpid(), StartTime: self.StartTime, UsedMiB: 1000}},
			want:    map[int]int64{os.Getpid(): 1000},
		},
		{
			name:     "a record of the reader's namespace whose PID was reused is not reported",
			realProc: true,
			records:  []Process{{PIDNamespace: self.PIDNamespace, PID: os.Getpid(), StartTime: self.StartTime + 1, UsedMiB: 1000}},
			want:     map[int]int64{},
		},
		{
			name:        "a reader in a container finds an old record's host PID under the host's /proc, not by kill",
			procs:       []fakeProc{{nspid: []int{4242}, start: 5000}},
			readerNSpid: []int{900, 12},
			records: []Process{
				{PID: 4242, UsedMiB: 1000},
				{PID: os.Getpid(), UsedMiB: 2000}, // alive here, but not under the host's /proc
			},
			want: map[int]int64{4242: 1000},
		},
		{
			name:        "a reader in a container reports a job of its own namespace under its host PID",
			procs:       []fakeProc{{nspid: []int{901, 13}, start: 700}},
			readerNSpid: []int{900, 12},
			records:     []Process{{PIDNamespace: self.PIDNamespace, PID: 13, StartTime: 700, UsedMiB: 1000}},
			want:        map[int]int64{901: 1000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			root := "/proc"
			if !tt.realProc {
				root = filepath.Join(dir, "proc")
				writeFakeProcs(t, root, tt.procs, tt.readerNSpid)
			}
			s, _ := NewState(Config{Node: "n", Preset: "t4x4"})
			st, err := Create(filepath.Join(dir, "nvml.json"), s)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.records {
				if err := st.SetProcess(0, p); err != nil {
					t.Fatal(err)
				}
			}
			logger, _ := ktesting.NewTestContext(t)
			iface := New(st, WithProcRoot(root), WithLogger(logger))
			if diff := cmp.Diff(tt.want, reported(t, iface)); diff != "" {
				t.Errorf("reported (-want +got):\n%s", diff)
			}
			// Again, from the kept answers.
			if diff := cmp.Diff(tt.want, reported(t, iface)); diff != "" {
				t.Errorf("reported the second time (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHostPIDFollowsTheProcess: a found process stops being reported when
// it ends, or when another process takes its host PID.
func TestHostPIDFollowsTheProcess(t *testing.T) {
	const ns = 4026599001
	for _, tt := range []struct {
		name  string
		after []fakeProc // the fake /proc once the job is gone
	}{
		{"it ended", nil},
		{"its host PID was reused", []fakeProc{{nspid: []int{4242}, start: 9000}}},
		{"its host PID was reused by a PID 7 of another container", []fakeProc{{nspid: []int{4242, 7}, start: 9000}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "proc")
			writeFakeProcs(t, root, []fakeProc{{nspid: []int{4242, 7}, start: 5000}}, nil)
			s, _ := NewState(Config{Node: "n", Preset: "t4x4"})
			st, err := Create(filepath.Join(dir, "nvml.json"), s)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SetProcess(0, Process{PIDNamespace: ns, PID: 7, StartTime: 5000, UsedMiB: 1000}); err != nil {
				t.Fatal(err)
			}
			iface := New(st, WithProcRoot(root))
			if got := reported(t, iface); !cmp.Equal(got, map[int]int64{4242: 1000}) {
				t.Fatalf("while it runs: %v", got)
			}
			if err := os.RemoveAll(root); err != nil {
				t.Fatal(err)
			}
			writeFakeProcs(t, root, tt.after, nil)
			if got := reported(t, iface); len(got) != 0 {
				t.Errorf("after: %v, want nothing", got)
			}
		})
	}
}
