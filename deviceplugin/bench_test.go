package deviceplugin

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// fullNode is a plugin on 8 x A100-80GB with 110 bound pods (the kubelet's
// default pod limit), each with a share of one card; with a PodResources
// socket, the kubelet says all but the last hold their devices.
func fullNode(b *testing.B, withPodResources bool) (*Plugin, []*corev1.Pod) {
	b.Helper()
	dir := b.TempDir()
	_, lib := mockNVML(&testing.T{}, dir, "a100x8")
	var list []*corev1.Pod
	for i := range 110 {
		alloc := fmt.Sprintf(`{"0":{"%d":%d}}`, i%8, 1+i%5)
		list = append(list, bound(fmt.Sprintf("p%03d", i), alloc, fmt.Sprint(i), fixture.MakePod().GPUMem(int64(1+i%5))))
	}
	opts := Options{NodeName: "node-a", Dir: dir, Unit: contract.GiB}
	var kubelet *podResources
	if withPodResources {
		kubelet, opts.PodResourcesSocket = servePodResources(b, dir)
	}
	p, err := New(opts, lib, &pods{cached: list, live: list}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.close)
	if kubelet != nil {
		next := map[int]int64{}
		for _, pod := range list[:len(list)-1] {
			a, _ := contract.ParseAllocation(pod.Annotations[contract.AnnotationAllocation])
			var ids []string
			for c, units := range a[0] {
				for range units {
					ids = append(ids, deviceID(p.cards[c].UUID, next[c]))
					next[c]++
				}
			}
			kubelet.hold(holding(pod.Name, "c0", ids...))
		}
	}
	return p, list
}

// BenchmarkAllocate serves the last-bound of 110 pods from a warm informer
// cache: with the plugin's memory of what it served (all 110 waiting, the
// longest search), and with the kubelet's PodResources API (109 holding).
func BenchmarkAllocate(b *testing.B) {
	for _, withPR := range []bool{false, true} {
		b.Run(map[bool]string{false: "memory", true: "podresources"}[withPR], func(b *testing.B) {
			p, list := fullNode(b, withPR)
			last := list[len(list)-1]
			a, _ := contract.ParseAllocation(last.Annotations[contract.AnnotationAllocation])
			var ids []string
			for c, units := range a[0] {
				for j := range units {
					ids = append(ids, deviceID(p.cards[c].UUID, 80-1-j))
				}
			}
			req := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := p.Allocate(ctx, req)
				if err != nil || resp.ContainerResponses[0].Envs[contract.EnvIndex] == "" {
					b.Fatal(err)
				}
				if !withPR {
					p.holdings = newServedHoldings(nil) // forget what was served
				}
			}
		})
	}
}

// BenchmarkListAndWatch builds and encodes the device list of 8 x 80 GiB
// cards in GiB and in MiB (the MiB list the plugin refuses to send).
func BenchmarkListAndWatch(b *testing.B) {
	for _, unit := range []contract.Unit{contract.GiB, contract.MiB} {
		b.Run(string(unit), func(b *testing.B) {
			cards := make([]card, 8)
			for i := range cards {
				cards[i] = card{units: unit.FromMiB(81920), healthy: true}
				cards[i].UUID = fmt.Sprintf("GPU-%08x-0000-0000-0000-%012x", i, i)
			}
			var size int
			for b.Loop() {
				size = listSize(cards)
			}
			b.ReportMetric(float64(8*cards[0].units), "devices")
			b.ReportMetric(float64(size), "bytes")
		})
	}
}

func TestListAndWatchFitsTheKubeletsMessageLimit(t *testing.T) {
	tests := []struct {
		preset  string
		unit    contract.Unit
		wantErr bool
	}{
		{"a100x8", contract.GiB, false},
		{"t4x4", contract.MiB, false},  // 61,440 devices, 3.6 MiB
		{"h100x1", contract.MiB, true}, // 81,559 devices
		{"a100x8", contract.MiB, true}, // 655,360 devices
	}
	for _, tt := range tests {
		t.Run(tt.preset+"/"+string(tt.unit), func(t *testing.T) {
			dir := t.TempDir()
			_, lib := mockNVML(t, dir, tt.preset)
			p, err := New(Options{NodeName: "node-a", Dir: dir, Unit: tt.unit}, lib, &pods{}, nil)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "over the 4 MiB the kubelet accepts") {
					t.Errorf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if size := listSize(p.cards); size > MaxListAndWatchBytes {
				t.Errorf("list of %d bytes", size)
			}
		})
	}
}
