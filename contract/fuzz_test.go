package contract_test

import (
	"testing"

	"github.com/gpupack/gpupack/contract"
)

func FuzzParseAllocation(f *testing.F) {
	for _, s := range []string{`{"0":{"1":4}}`, `{"0":{"0":2,"1":2},"3":{"1":1}}`, `{}`, `{"0":{"-1":4}}`, `{"9999999999999999999":{"1":1}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := contract.ParseAllocation(s)
		if err != nil {
			return
		}
		// What parses is well formed and survives a round trip.
		b, err := contract.ParseAllocation(a.String())
		if err != nil || b.String() != a.String() {
			t.Fatalf("round trip of %q: %v %v", s, b, err)
		}
		for c, cards := range a {
			for card, u := range cards {
				if c < 0 || card < 0 || u <= 0 {
					t.Fatalf("accepted %q", s)
				}
			}
		}
	})
}

func FuzzParseInventory(f *testing.F) {
	f.Add(`{"cards":[{"index":0,"uuid":"GPU-1","model":"T4","memoryMiB":15360,"healthy":true}]}`)
	f.Add(`{"cards":[{"index":0,"memoryMiB":1},{"index":0,"memoryMiB":1}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := contract.ParseInventory(s)
		if err != nil {
			return
		}
		if err := inv.Validate(); err != nil {
			t.Fatalf("parsed an invalid inventory %q: %v", s, err)
		}
	})
}
