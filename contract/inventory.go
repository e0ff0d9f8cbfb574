package contract

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Inventory is the document the device plugin writes to AnnotationInventory on
// its Node: every card it found, so that the extender sizes each card from the
// card itself (mixed models on one node) and knows its health.
type Inventory struct {
	Cards []Card `json:"cards"`
}

// Card is one GPU as the device plugin sees it.
type Card struct {
	// Index is the NVML index, the one ALIYUN_COM_GPU_MEM_IDX names.
	Index int `json:"index"`
	// UUID is the NVML UUID (GPU-...).
	UUID string `json:"uuid"`
	// Model is the NVML product name, e.g. "NVIDIA A100-SXM4-80GB".
	Model string `json:"model"`
	// MemoryMiB is the card's total memory.
	MemoryMiB int64 `json:"memoryMiB"`
	// Healthy is false while the card has a critical fault (Xid, ECC, lost).
	Healthy bool `json:"healthy"`
}

// ParseInventory decodes and checks an AnnotationInventory value.
func ParseInventory(s string) (*Inventory, error) {
	var inv Inventory
	if err := json.Unmarshal([]byte(s), &inv); err != nil {
		return nil, fmt.Errorf("inventory is not JSON {\"cards\":[...]}: %w", err)
	}
	if err := inv.Validate(); err != nil {
		return nil, err
	}
	return &inv, nil
}

// Validate checks that indices are unique and sizes positive.
func (inv *Inventory) Validate() error {
	if len(inv.Cards) == 0 {
		return errors.New("inventory lists no card")
	}
	seen := make(map[int]bool, len(inv.Cards))
	for _, c := range inv.Cards {
		if c.Index < 0 {
			return fmt.Errorf("inventory: card index %d is negative", c.Index)
		}
		if seen[c.Index] {
			return fmt.Errorf("inventory: card index %d appears twice", c.Index)
		}
		seen[c.Index] = true
		if c.MemoryMiB <= 0 {
			return fmt.Errorf("inventory: card %d has memoryMiB %d, want > 0", c.Index, c.MemoryMiB)
		}
	}
	return nil
}

// String encodes the inventory as its annotation value.
func (inv *Inventory) String() string {
	b, err := json.Marshal(inv)
	if err != nil {
		panic(err)
	}
	return string(b)
}
