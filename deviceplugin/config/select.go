package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Ext is the extension of each named configuration in a Source's Dir: the
// configuration "big" is big.yaml (the ConfigMap's key).
const Ext = ".yaml"

// ErrUnknownConfig is the error of a node whose label (or, without one,
// the default name) names no configuration in the folder.
var ErrUnknownConfig = errors.New("no such device plugin configuration")

// Source is where a node's configuration comes from: one File for every
// node, or a Dir of named configurations (<name>.yaml each, as a mounted
// ConfigMap holds them) of which the node's Label picks one, Default when
// the node has no such label. Neither: no file (flags and defaults).
type Source struct {
	File    string
	Dir     string
	Label   string
	Default string
}

// Selection is the file a node runs with.
type Selection struct {
	// Name is the configuration's name in Source.Dir ("" for Source.File).
	Name string
	// Labelled: the node's label named it (not the default).
	Labelled bool
	Path     string
	Data     []byte
}

// Config parses the selected file (not defaulted).
func (s *Selection) Config() (*Config, error) { return Parse(s.Data, s.Path) }

// Same reports whether o is the same configuration, name and content.
func (s *Selection) Same(o *Selection) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Name == o.Name && s.Path == o.Path && bytes.Equal(s.Data, o.Data)
}

// Names lists the configurations in Dir, sorted (the files <name>.yaml;
// the hidden entries of a mounted ConfigMap are skipped).
func (s Source) Names() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("listing device plugin configs: %w", err)
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), Ext); ok && n != "" && !strings.HasPrefix(n, ".") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Select returns the node's file: Source.File, or the configuration in
// Source.Dir that the node's labels name; nil when the Source has neither.
// A name the folder does not hold is ErrUnknownConfig, with the names it
// holds.
func (s Source) Select(labels map[string]string) (*Selection, error) {
	if s.File != "" {
		b, err := os.ReadFile(s.File)
		if err != nil {
			return nil, fmt.Errorf("reading device plugin config: %w", err)
		}
		return &Selection{Path: s.File, Data: b}, nil
	}
	if s.Dir == "" {
		return nil, nil
	}
	name, labelled := labels[s.Label]
	if !labelled {
		name = s.Default
	}
	names, err := s.Names()
	if err != nil {
		return nil, err
	}
	if !slices.Contains(names, name) {
		have := strings.Join(names, ", ")
		if have == "" {
			have = "none"
		}
		if labelled {
			return nil, fmt.Errorf("%w: node label %s=%q names no file %s%s in %s; configurations there: %s",
				ErrUnknownConfig, s.Label, name, name, Ext, s.Dir, have)
		}
		return nil, fmt.Errorf("%w: the node has no label %s, and the default configuration %q (file %s%s) is not in %s; configurations there: %s",
			ErrUnknownConfig, s.Label, name, name, Ext, s.Dir, have)
	}
	path := filepath.Join(s.Dir, name+Ext)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading device plugin config %q: %w", name, err)
	}
	return &Selection{Name: name, Labelled: labelled, Path: path, Data: b}, nil
}
