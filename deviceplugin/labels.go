package deviceplugin

import (
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/nvml"
)

// nodeLabelKeys are the labels the plugin owns. Every publish writes each
// of them, a value or a removal, so that none is left stale.
var nodeLabelKeys = []string{
	contract.LabelGPUProduct,
	contract.LabelGPUMemory,
	contract.LabelGPUCount,
	contract.LabelGPUMixed,
	contract.LabelDriverVersion,
	contract.LabelCUDADriverVersion,
}

// nodeLabels are the node's labels as the cards and driver say, for a JSON
// merge patch of metadata.labels: every key of nodeLabelKeys, with nil (a
// removal) where the value is unknown or is not a valid label value.
func nodeLabels(cards []contract.Card, sys nvml.System) map[string]*string {
	out := make(map[string]*string, len(nodeLabelKeys))
	for _, k := range nodeLabelKeys {
		out[k] = nil
	}
	set := func(key, value string) {
		if len(validation.IsValidLabelValue(value)) == 0 && value != "" {
			out[key] = &value
		}
	}
	if len(cards) > 0 {
		product, mixed := mainModel(cards)
		set(contract.LabelGPUProduct, ModelLabelValue(product))
		if mixed {
			set(contract.LabelGPUMixed, "true")
		}
		smallest := cards[0].MemoryMiB
		for _, c := range cards[1:] {
			smallest = min(smallest, c.MemoryMiB)
		}
		if smallest > 0 {
			set(contract.LabelGPUMemory, strconv.FormatInt(smallest, 10))
		}
		set(contract.LabelGPUCount, strconv.Itoa(len(cards)))
	}
	set(contract.LabelDriverVersion, sys.DriverVersion)
	set(contract.LabelCUDADriverVersion, sys.CUDADriverVersion)
	return out
}

// mainModel is the model of the most cards, a tie going to the model of
// the lowest-indexed card; mixed tells whether the cards are of more than
// one model.
func mainModel(cards []contract.Card) (model string, mixed bool) {
	count := map[string]int{}
	first := map[string]int{}
	for _, c := range cards {
		if _, ok := first[c.Model]; !ok || c.Index < first[c.Model] {
			first[c.Model] = c.Index
		}
		count[c.Model]++
	}
	for m, n := range count {
		if model == "" || n > count[model] || n == count[model] && first[m] < first[model] {
			model = m
		}
	}
	return model, len(count) > 1
}

// vendorPrefixes are dropped from a model's label value, in this order, as
// contract.ModelAllowed drops them from the names it compares.
var vendorPrefixes = []string{"NVIDIA ", "Tesla "}

// ModelLabelValue is a card model as the value of contract.LabelGPUProduct:
// without its vendor prefix, each byte other than [A-Za-z0-9._-] turned
// into '-', cut to 63 characters and trimmed to start and end with
// a letter or digit. "NVIDIA A100-SXM4-80GB" is "A100-SXM4-80GB", "Tesla
// T4" is "T4", "NVIDIA H100 80GB HBM3" is "H100-80GB-HBM3". It is "" when
// nothing is left.
//
// Bytes map one for one, so a name that contract.ModelAllowed finds a
// model to start with, mapped the same way, also starts the model's label
// value.
func ModelLabelValue(model string) string {
	for _, p := range vendorPrefixes {
		if len(model) > len(p) && strings.EqualFold(model[:len(p)], p) {
			model = model[len(p):]
		}
	}
	b := []byte(model)
	for i, c := range b {
		if !alphanumeric(c) && c != '.' && c != '_' && c != '-' {
			b[i] = '-'
		}
	}
	if len(b) > validation.LabelValueMaxLength {
		b = b[:validation.LabelValueMaxLength]
	}
	start, end := 0, len(b)
	for start < end && !alphanumeric(b[start]) {
		start++
	}
	for end > start && !alphanumeric(b[end-1]) {
		end--
	}
	return string(b[start:end])
}

func alphanumeric(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
