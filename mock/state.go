package mock

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"sigs.k8s.io/yaml"
)

// State is a simulated node.
type State struct {
	// Node names the node (it seeds the cards' UUIDs).
	Node  string      `json:"node"`
	Cards []CardState `json:"cards"`
	// Events are faults not yet delivered, in order; Seq numbers them.
	Events []Event `json:"events,omitempty"`
	Seq    uint64  `json:"seq"`
}

// CardState is one simulated card.
type CardState struct {
	Model     string    `json:"model"`
	UUID      string    `json:"uuid"`
	MemoryMiB int64     `json:"memoryMiB"`
	IdleW     int       `json:"idleW"`
	MaxW      int       `json:"maxW"`
	Lost      bool      `json:"lost,omitempty"`
	Processes []Process `json:"processes,omitempty"`
}

// Process is a process using a card. PIDNamespace, PID and StartTime are
// its Identity: a job in a container records its PID in the container's
// namespace, and the simulated NVML finds its host PID.
type Process struct {
	// PID is the process's PID in PIDNamespace; without PIDNamespace (a
	// record written before namespaces were), a PID of the host.
	PID int `json:"pid"`
	// PIDNamespace is the inode of the process's PID namespace
	// (/proc/<pid>/ns/pid).
	PIDNamespace uint64 `json:"pidNamespace,omitempty"`
	// StartTime is the process's start in clock ticks after boot (field 22
	// of /proc/<pid>/stat), the same from every namespace: it tells the
	// process from a later one with its PID.
	StartTime uint64 `json:"startTime,omitempty"`
	UsedMiB   int64  `json:"usedMiB"`
	// SM is the share of the card's SMs it keeps busy, 0..100.
	SM int `json:"sm"`
	// Job names the simulated job, for people reading the file.
	Job string `json:"job,omitempty"`
}

// Identity is the identity the process recorded.
func (p Process) Identity() Identity {
	return Identity{PIDNamespace: p.PIDNamespace, PID: p.PID, StartTime: p.StartTime}
}

// sameProcess reports whether two records name the same process slot: the
// same PID in the same namespace (a record without a namespace is of the
// host's).
func (p Process) sameProcess(q Process) bool {
	return p.PIDNamespace == q.PIDNamespace && p.PID == q.PID
}

// Event is a fault to deliver through NVML events.
type Event struct {
	Seq  uint64 `json:"seq"`
	Card int    `json:"card"`
	// Xid is the Xid of a critical error; 0 with DoubleBitECC set for an
	// ECC error.
	Xid          uint64 `json:"xid,omitempty"`
	DoubleBitECC bool   `json:"doubleBitECC,omitempty"`
}

// Config describes a node to simulate: a preset or a list of cards.
type Config struct {
	Node   string   `json:"node"`
	Preset string   `json:"preset,omitempty"`
	Cards  []string `json:"cards,omitempty"`
}

// NewState builds a node from a config: a preset name, or a list of card
// models (short or NVML names).
func NewState(c Config) (*State, error) {
	models := c.Cards
	if c.Preset != "" {
		p, ok := Presets[c.Preset]
		if !ok {
			return nil, fmt.Errorf("unknown preset %q: known presets are %v", c.Preset, PresetNames())
		}
		models = p
	}
	if len(models) == 0 {
		return nil, errors.New("a simulated node needs a preset or at least one card")
	}
	s := &State{Node: c.Node}
	for i, name := range models {
		m, err := lookupModel(name)
		if err != nil {
			return nil, fmt.Errorf("card %d: %w", i, err)
		}
		s.Cards = append(s.Cards, CardState{Model: m.Name, UUID: uuidFor(c.Node, i), MemoryMiB: m.MemoryMiB, IdleW: m.IdleW, MaxW: m.MaxW})
	}
	return s, nil
}

// uuidFor makes a stable, NVML-shaped UUID for card i of a node.
func uuidFor(node string, i int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", node, i)))
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// LoadConfig reads a node config file (YAML or JSON).
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading mock config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, fmt.Errorf("mock config %s: %w", path, err)
	}
	return c, nil
}

// Store is a State kept in a file, shared between processes. Writers hold
// an exclusive lock on a lock file beside it (readers a shared one) and
// replace the file whole by renaming a new one over it, so a process
// killed halfway through an update (the kubelet kills jobs at will) leaves
// the previous state, never a torn or empty one.
type Store struct{ path string }

// Create writes a new state file (replacing any) and returns its store.
func Create(path string, s *State) (*Store, error) {
	st := &Store{path: path}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("mock NVML state: %w", err)
	}
	return st, st.locked(syscall.LOCK_EX, func() error { return st.write(s) })
}

// Open returns the store of an existing state file.
func Open(path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("mock NVML state: %w", err)
	}
	return &Store{path: path}, nil
}

// Path is the state file.
func (st *Store) Path() string { return st.path }

// Read returns the current state.
func (st *Store) Read() (*State, error) {
	var s *State
	err := st.locked(syscall.LOCK_SH, func() error {
		var err error
		s, err = st.read()
		return err
	})
	return s, err
}

// Update changes the state under the lock.
func (st *Store) Update(fn func(*State) error) error {
	return st.locked(syscall.LOCK_EX, func() error {
		s, err := st.read()
		if err != nil {
			return err
		}
		if err := fn(s); err != nil {
			return err
		}
		return st.write(s)
	})
}

// locked runs fn holding the lock file's lock (how: LOCK_SH or LOCK_EX).
func (st *Store) locked(how int, fn func() error) error {
	f, err := os.OpenFile(st.path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("mock NVML state: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		return fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing unlocks too
	return fn()
}

// read decodes the state file; a missing file is an empty state.
func (st *Store) read() (*State, error) {
	s := &State{}
	b, err := os.ReadFile(st.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mock NVML state: %w", err)
	}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("mock NVML state %s: %w", st.path, err)
	}
	return s, nil
}

// write replaces the state file with s: a new file renamed over it (the
// caller holds the exclusive lock, so the temporary name is its own).
func (st *Store) write(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := st.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("mock NVML state: %w", err)
	}
	if err := os.Rename(tmp, st.path); err != nil {
		return fmt.Errorf("mock NVML state: %w", err)
	}
	return nil
}

// Prepare opens the state file of a simulated node at path, as
// OpenOrCreate does, for spec: a preset name (see Presets) or the path of a
// Config file. The node name seeds the cards' UUIDs when the config does
// not name one.
func Prepare(spec, path, node string) (*Store, error) {
	s, err := StateFromSpec(spec, node)
	if err != nil {
		return nil, err
	}
	st, _, err := OpenOrCreate(path, s)
	return st, err
}

// StateFromSpec builds a simulated node from spec: a preset name (see
// Presets) or the path of a Config file. The node name seeds the cards'
// UUIDs when the config does not name one.
func StateFromSpec(spec, node string) (*State, error) {
	var c Config
	if _, ok := Presets[spec]; ok {
		c = Config{Preset: spec}
	} else if _, err := os.Stat(spec); err == nil {
		if c, err = LoadConfig(spec); err != nil {
			return nil, err
		}
	} else {
		return nil, fmt.Errorf("mock NVML %q is neither a preset (%v) nor a config file", spec, PresetNames())
	}
	if c.Node == "" {
		c.Node = node
	}
	return NewState(c)
}

// OpenOrCreate returns the store of the state file at path. A file that
// describes the node of s (same node, same cards) is kept as it is, with
// its processes, lost cards and faults: a device plugin that restarts
// finds its node as it left it. Any other file (none, unreadable, another
// node or other cards) is replaced by s. kept says which.
func OpenOrCreate(path string, s *State) (st *Store, kept bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, fmt.Errorf("mock NVML state: %w", err)
	}
	st = &Store{path: path}
	err = st.locked(syscall.LOCK_EX, func() error {
		if cur, err := st.read(); err == nil && cur.sameNode(s) {
			kept = true
			return nil
		}
		return st.write(s)
	})
	if err != nil {
		return nil, false, err
	}
	return st, kept, nil
}

// sameNode reports whether s describes the node and cards of o (what
// happens on the cards aside).
func (s *State) sameNode(o *State) bool {
	if s.Node != o.Node || len(s.Cards) != len(o.Cards) {
		return false
	}
	for i, c := range s.Cards {
		w := o.Cards[i]
		if c.Model != w.Model || c.UUID != w.UUID || c.MemoryMiB != w.MemoryMiB || c.IdleW != w.IdleW || c.MaxW != w.MaxW {
			return false
		}
	}
	return true
}
