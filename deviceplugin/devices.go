package deviceplugin

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/nvml"
)

// idSep separates a card's UUID from the unit number in a fake device id.
const idSep = "-_-"

// deviceID is the id of unit j of a card.
func deviceID(uuid string, j int64) string { return uuid + idSep + strconv.FormatInt(j, 10) }

// parseID splits a fake device id.
func parseID(id string) (uuid string, j int64, err error) {
	i := strings.LastIndex(id, idSep)
	if i <= 0 {
		return "", 0, fmt.Errorf("device id %q is not <GPU-UUID>%s<n>", id, idSep)
	}
	j, err = strconv.ParseInt(id[i+len(idSep):], 10, 64)
	if err != nil || j < 0 {
		return "", 0, fmt.Errorf("device id %q is not <GPU-UUID>%s<n>", id, idSep)
	}
	return id[:i], j, nil
}

// card is one card as the plugin sees it.
type card struct {
	nvml.Device
	units   int64
	healthy bool
}

// listDevices lists the fake devices of every card.
func listDevices(cards []card) []*pluginapi.Device {
	var n int64
	for _, c := range cards {
		n += c.units
	}
	out := make([]*pluginapi.Device, 0, n)
	for _, c := range cards {
		health := pluginapi.Healthy
		if !c.healthy {
			health = pluginapi.Unhealthy
		}
		for j := range c.units {
			out = append(out, &pluginapi.Device{ID: deviceID(c.UUID, j), Health: health})
		}
	}
	return out
}

// MaxListAndWatchBytes is the largest ListAndWatch message the kubelet
// receives: its device-plugin client keeps gRPC's default limit of 4 MiB.
const MaxListAndWatchBytes = 4 << 20

// listSize is the encoded size of the device list of cards.
func listSize(cards []card) int {
	return proto.Size(&pluginapi.ListAndWatchResponse{Devices: listDevices(cards)})
}

// PerCard counts the units per card index (byUUID: card UUID -> index) in a
// list of the plugin's device ids, as the kubelet hands them to Allocate and
// lists them in PodResources.
func PerCard(ids []string, byUUID map[string]int) (map[int]int64, error) {
	out := map[int]int64{}
	for _, id := range ids {
		uuid, _, err := parseID(id)
		if err != nil {
			return nil, err
		}
		idx, ok := byUUID[uuid]
		if !ok {
			return nil, fmt.Errorf("device id %q names no card of this node", id)
		}
		out[idx]++
	}
	return out, nil
}

// inventory is the node annotation the extender reads.
func inventory(cards []card) *contract.Inventory {
	inv := &contract.Inventory{}
	for _, c := range cards {
		inv.Cards = append(inv.Cards, contract.Card{Index: c.Index, UUID: c.UUID, Model: c.Model, MemoryMiB: c.MemoryMiB, Healthy: c.healthy})
	}
	sort.Slice(inv.Cards, func(i, j int) bool { return inv.Cards[i].Index < inv.Cards[j].Index })
	return inv
}
