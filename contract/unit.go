package contract

import (
	"fmt"
	"strings"
)

// Unit is the memory unit of aliyun.com/gpu-mem in a cluster. Every component
// of one cluster must use the same unit.
type Unit string

const (
	GiB Unit = "GiB"
	MiB Unit = "MiB"
)

// DefaultUnit is gpushare's default.
const DefaultUnit = GiB

// ParseUnit accepts GiB or MiB (case-insensitive; "G"/"M" as gpushare's
// device plugin flag spelled them).
func ParseUnit(s string) (Unit, error) {
	switch strings.ToLower(s) {
	case "gib", "g", "gi":
		return GiB, nil
	case "mib", "m", "mi":
		return MiB, nil
	}
	return "", fmt.Errorf("unknown memory unit %q: want GiB or MiB", s)
}

// MiB returns how many MiB one unit holds.
func (u Unit) MiB() int64 {
	if u == MiB {
		return 1
	}
	return 1024
}

// FromMiB converts a card's memory in MiB to whole units, rounding down: a
// card of 15,360 MiB holds 15 GiB units.
func (u Unit) FromMiB(mib int64) int64 { return mib / u.MiB() }
