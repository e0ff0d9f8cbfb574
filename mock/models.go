package mock

import (
	"fmt"
	"sort"
	"strings"
)

// Model is a card model as NVML reports it.
type Model struct {
	Name      string
	MemoryMiB int64
	// IdleW and MaxW bound the simulated power draw.
	IdleW, MaxW int
}

// Models are the card models the simulator knows, by short name.
var Models = map[string]Model{
	"A100-80GB": {Name: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, IdleW: 60, MaxW: 400},
	"A100-40GB": {Name: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960, IdleW: 55, MaxW: 400},
	"H100-80GB": {Name: "NVIDIA H100 80GB HBM3", MemoryMiB: 81559, IdleW: 70, MaxW: 700},
	"A10":       {Name: "NVIDIA A10", MemoryMiB: 23028, IdleW: 20, MaxW: 150},
	"T4":        {Name: "Tesla T4", MemoryMiB: 15360, IdleW: 10, MaxW: 70},
	"V100-16GB": {Name: "Tesla V100-SXM2-16GB", MemoryMiB: 16160, IdleW: 40, MaxW: 300},
	"V100-32GB": {Name: "Tesla V100-SXM2-32GB", MemoryMiB: 32510, IdleW: 40, MaxW: 300},
	"P100":      {Name: "Tesla P100-PCIE-16GB", MemoryMiB: 16280, IdleW: 30, MaxW: 250},
}

// Presets are named nodes: model short names, one per card.
var Presets = map[string][]string{
	"a100x8": repeat("A100-80GB", 8),
	"t4x4":   repeat("T4", 4),
	"mixed":  {"A100-80GB", "A100-80GB", "T4", "T4"},
	"h100x1": {"H100-80GB"},
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// ModelNames lists the known model short names, sorted.
func ModelNames() []string { return keys(Models) }

// PresetNames lists the presets, sorted.
func PresetNames() []string { return keys(Presets) }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// lookupModel accepts a short name or the NVML name.
func lookupModel(name string) (Model, error) {
	if m, ok := Models[name]; ok {
		return m, nil
	}
	for _, m := range Models {
		if strings.EqualFold(m.Name, name) {
			return m, nil
		}
	}
	return Model{}, fmt.Errorf("unknown card model %q: known models are %s", name, strings.Join(ModelNames(), ", "))
}
