package contract_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

func TestCardsOf(t *testing.T) {
	withoutCount := func(n *fixture.NodeWrapper) *corev1.Node {
		o := n.Obj()
		delete(o.Status.Allocatable, contract.ResourceGPUCount)
		return o
	}
	const noCount = "allocatable aliyun.com/gpu-mem without aliyun.com/gpu-count: the number of cards is unknown"
	tests := []struct {
		name string
		node *corev1.Node
		unit contract.Unit
		want contract.NodeCards
	}{{
		// 81,920 MiB = 80 GiB; 15,360 MiB = 15 GiB; sorted by index.
		name: "the inventory, card by card",
		node: fixture.MakeNode("n").Cards("A100", fixture.GiB(80)).Cards("T4", 15360).Unhealthy(1).Obj(),
		unit: contract.GiB,
		want: contract.NodeCards{Source: contract.SourceInventory, Cards: []contract.NodeCard{
			{Index: 0, UUID: "GPU-n-0", Model: "A100", Total: 80, Healthy: true},
			{Index: 1, UUID: "GPU-n-1", Model: "T4", Total: 15},
		}},
	}, {
		name: "the inventory in MiB",
		node: fixture.MakeNode("n").Cards("T4", 15360).Obj(),
		unit: contract.MiB,
		want: contract.NodeCards{Source: contract.SourceInventory, Cards: []contract.NodeCard{{Index: 0, UUID: "GPU-n-0", Model: "T4", Total: 15360, Healthy: true}}},
	}, {
		// 31 / 2 = 15 each; the odd unit is dropped.
		name: "gpushare's allocatable split evenly",
		node: fixture.MakeNode("n").Legacy(31, 2).Obj(),
		unit: contract.GiB,
		want: contract.NodeCards{Source: contract.SourceAllocatable, Cards: []contract.NodeCard{{Index: 0, Total: 15, Healthy: true}, {Index: 1, Total: 15, Healthy: true}}},
	}, {
		name: "gpu-mem without gpu-count is no card",
		node: withoutCount(fixture.MakeNode("n").Legacy(16, 1)),
		unit: contract.GiB,
		want: contract.NodeCards{Problem: noCount},
	}, {
		name: "a gpu-count of 0 is no card",
		node: fixture.MakeNode("n").Legacy(16, 0).Obj(),
		unit: contract.GiB,
		want: contract.NodeCards{Problem: noCount},
	}, {
		name: "no gpu-mem is no card, and nothing wrong",
		node: fixture.MakeNode("n").Obj(),
		unit: contract.GiB,
		want: contract.NodeCards{},
	}, {
		name: "a broken inventory falls back to allocatable and says why",
		node: func() *corev1.Node {
			n := fixture.MakeNode("n").Legacy(16, 1).Obj()
			n.Annotations[contract.AnnotationInventory] = `{"cards":[]}`
			return n
		}(),
		unit: contract.GiB,
		want: contract.NodeCards{Source: contract.SourceAllocatable, Problem: "inventory lists no card", Cards: []contract.NodeCard{{Index: 0, Total: 16, Healthy: true}}},
	}, {
		name: "a broken inventory and no gpu-count: both said",
		node: func() *corev1.Node {
			n := withoutCount(fixture.MakeNode("n").Legacy(16, 1))
			n.Annotations[contract.AnnotationInventory] = `{"cards":[]}`
			return n
		}(),
		unit: contract.GiB,
		want: contract.NodeCards{Problem: "inventory lists no card; " + noCount},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, contract.CardsOf(tt.node, tt.unit)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
