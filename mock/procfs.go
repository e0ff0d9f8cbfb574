package mock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Identity names a process from any PID namespace: its PID namespace, its
// PID there, and its start time. A PID alone means nothing outside its
// namespace (every container has a PID 1); the start time tells a process
// from a later one that reuses its PID.
type Identity struct {
	// PIDNamespace is the inode of the process's PID namespace, as
	// /proc/<pid>/ns/pid names it ("pid:[4026532201]").
	PIDNamespace uint64
	// PID is the process's PID in that namespace.
	PID int
	// StartTime is field 22 of /proc/<pid>/stat: clock ticks from boot to
	// the process's start, the same number from every PID namespace.
	StartTime uint64
}

func (id Identity) String() string {
	return fmt.Sprintf("PID %d of PID namespace %d (started at tick %d)", id.PID, id.PIDNamespace, id.StartTime)
}

// SelfIdentity is the identity of the calling process, read from its own
// /proc (every process may read its own namespace link and stat, whatever
// its capabilities).
func SelfIdentity() (Identity, error) {
	ns, err := readPIDNamespace("/proc/self/ns/pid")
	if err != nil {
		return Identity{}, err
	}
	start, err := readStartTime("/proc/self/stat")
	if err != nil {
		return Identity{}, err
	}
	// os.Getpid is the PID in the caller's own namespace; /proc/self/stat
	// would give the PID in /proc's namespace, which may be an ancestor.
	return Identity{PIDNamespace: ns, PID: os.Getpid(), StartTime: start}, nil
}

// readPIDNamespace reads a PID namespace link such as /proc/self/ns/pid.
func readPIDNamespace(link string) (uint64, error) {
	s, err := os.Readlink(link)
	if err != nil {
		return 0, fmt.Errorf("reading the PID namespace: %w", err)
	}
	ns, err := parseNamespaceLink(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", link, err)
	}
	return ns, nil
}

// parseNamespaceLink reads the inode out of a namespace link's target,
// "pid:[4026531836]".
func parseNamespaceLink(s string) (uint64, error) {
	rest, ok := strings.CutPrefix(s, "pid:[")
	if !ok {
		return 0, fmt.Errorf("namespace link %q: want pid:[<inode>]", s)
	}
	digits, ok := strings.CutSuffix(rest, "]")
	if !ok {
		return 0, fmt.Errorf("namespace link %q: want pid:[<inode>]", s)
	}
	ino, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || ino == 0 {
		return 0, fmt.Errorf("namespace link %q: want pid:[<inode>]", s)
	}
	return ino, nil
}

// maxProcFile bounds what is read of a /proc file: stat and status are a
// few KiB; anything longer is not one of them.
const maxProcFile = 64 << 10

func readProcFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(f, maxProcFile)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b.Bytes(), nil
}

// readStartTime reads the start time out of a stat file.
func readStartTime(path string) (uint64, error) {
	b, err := readProcFile(path)
	if err != nil {
		return 0, err
	}
	start, err := parseStartTime(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return start, nil
}

// parseStartTime reads field 22 (starttime) of /proc/<pid>/stat. Field 2,
// the command name in parentheses, may hold spaces and parentheses itself
// ("(sd-pam)", "(my (odd) job)"), so the fields are counted from the last
// ')': field 3, the state, comes after it.
func parseStartTime(b []byte) (uint64, error) {
	r := bytes.LastIndexByte(b, ')')
	if r < 0 || bytes.IndexByte(b, '(') < 0 {
		return 0, errors.New("stat: no command name in parentheses")
	}
	fields := strings.Fields(string(b[r+1:]))
	const starttime = 22 - 3 // index of field 22 among the fields from field 3 on
	if len(fields) <= starttime {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least %d", len(fields), starttime+1)
	}
	v, err := strconv.ParseUint(fields[starttime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: start time %q: %w", fields[starttime], err)
	}
	return v, nil
}

// readNSpid reads the NSpid line of a status file.
func readNSpid(path string) ([]int, error) {
	b, err := readProcFile(path)
	if err != nil {
		return nil, err
	}
	pids, err := parseNSpid(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pids, nil
}

// parseNSpid reads the NSpid line of /proc/<pid>/status: the process's PID
// in each PID namespace it is in, from the namespace of that /proc to its
// own.
func parseNSpid(b []byte) ([]int, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxProcFile)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "NSpid:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, errors.New("status: empty NSpid line")
		}
		pids := make([]int, len(fields))
		for i, f := range fields {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 0 {
				return nil, fmt.Errorf("status: NSpid %q is not a list of PIDs", strings.TrimSpace(rest))
			}
			pids[i] = pid
		}
		return pids, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return nil, errors.New("status: no NSpid line")
}

// procPath is <root>/<pid>/<file>.
func procPath(root string, pid int, file string) string {
	return filepath.Join(root, strconv.Itoa(pid), file)
}
