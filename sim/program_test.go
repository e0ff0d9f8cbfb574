package sim

import (
	"strings"
	"testing"
)

// TestCheckPlacements: checkPlacements accepts a placement and names each
// way a list of placements can fail to be one.
func TestCheckPlacements(t *testing.T) {
	nodes := []Node{
		{Name: "a", CPUMilli: 4000, MemoryMiB: 4096, GPUs: 2, Model: "T4"},
		{Name: "b", CPUMilli: 4000, MemoryMiB: 4096, GPUs: 2, Model: "V100"},
	}
	pods := []Pod{
		{Name: "share", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 600},
		{Name: "whole", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 1000},
		{Name: "v100", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 300, Models: []string{"V100"}},
		{Name: "big", CPUMilli: 3500, MemoryMiB: 1024, NumGPU: 1, GPUMilli: 100},
		{Name: "pair", CPUMilli: 1000, MemoryMiB: 1024, NumGPU: 2, GPUMilli: 1000},
	}
	arrived := []int{0, 0, 1, 2, 3, 4}
	tests := []struct {
		name    string
		placed  []Placement
		want    int64
		wantErr string
	}{
		{"a placement", []Placement{{Pod: 0, Node: 0, Cards: []int{0}}, {Pod: 1, Node: 0, Cards: []int{1}}, {Pod: 2, Node: 1, Cards: []int{0}}, {Pod: 0, Node: 1, Cards: []int{0}}}, 2500, ""},
		{"nothing", nil, 0, ""},
		{"a pod twice", []Placement{{Pod: 1, Node: 0, Cards: []int{0}}, {Pod: 1, Node: 1, Cards: []int{0}}}, 0, "more often than it arrived"},
		{"a pod that did not arrive", []Placement{{Pod: 5, Node: 0, Cards: []int{0}}}, 0, "more often than it arrived"},
		{"no such node", []Placement{{Pod: 0, Node: 2, Cards: []int{0}}}, 0, "node 2 of 2"},
		{"a model not allowed", []Placement{{Pod: 2, Node: 0, Cards: []int{0}}}, 0, "models [V100]"},
		{"CPU", []Placement{{Pod: 3, Node: 0, Cards: []int{0}}, {Pod: 0, Node: 0, Cards: []int{1}}}, 0, "CPU 4500 of 4000"},
		{"cards asked", []Placement{{Pod: 4, Node: 0, Cards: []int{0}}}, 0, "asks 2 cards"},
		{"the same card twice", []Placement{{Pod: 4, Node: 0, Cards: []int{1, 1}}}, 0, "on cards [1 1]"},
		{"no such card", []Placement{{Pod: 0, Node: 0, Cards: []int{2}}}, 0, "on cards [2]"},
		{"a card over", []Placement{{Pod: 0, Node: 0, Cards: []int{0}}, {Pod: 0, Node: 0, Cards: []int{0}}}, 0, "card 0: 600 used, pod 0 asks 600"},
		{"a share on a whole card", []Placement{{Pod: 1, Node: 1, Cards: []int{1}}, {Pod: 2, Node: 1, Cards: []int{1}}}, 0, "card 1: 1000 used"},
		{"a whole card on a share", []Placement{{Pod: 2, Node: 1, Cards: []int{1}}, {Pod: 1, Node: 1, Cards: []int{1}}}, 0, "card 1: 300 used, pod 1 asks 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkPlacements(nodes, pods, arrived, tt.placed)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Errorf("%d, %v; want %d", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}
