package contract

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// ContainerRequest is what one container of a pod asks for.
//
//   - Mem > 0, Count == 0: one share of Mem units on one card (gpushare).
//   - Mem > 0, Count > 0: Mem/Count units on each of Count distinct cards.
//   - Mem == 0, Count > 0: Count whole cards, nobody else on them.
type ContainerRequest struct {
	// Index is the container's position in pod.spec.containers.
	Index int
	// Name is the container's name.
	Name  string
	Mem   int64
	Count int64
}

// Whole reports whether the container wants whole cards.
func (c ContainerRequest) Whole() bool { return c.Mem == 0 && c.Count > 0 }

// Cards is the number of distinct cards the container needs.
func (c ContainerRequest) Cards() int {
	if c.Count == 0 {
		return 1
	}
	return int(c.Count)
}

// PerCard is the share on each card, in units; 0 for whole cards.
func (c ContainerRequest) PerCard() int64 {
	if c.Whole() {
		return 0
	}
	return c.Mem / int64(c.Cards())
}

// ErrNoGPU is returned by PodRequests for a pod that asks for no GPU.
var ErrNoGPU = errors.New("pod asks for no GPU")

// maxCardsPerContainer bounds gpu-count: no node has more cards than this.
const maxCardsPerContainer = 64

// PodRequests reads the GPU requests of every container of a pod. A pod with
// no GPU container returns ErrNoGPU; a request that cannot be honoured
// (negative or fractional quantities, memory not divisible over the cards,
// GPU in an init container) returns an error that says what is wrong.
func PodRequests(pod *corev1.Pod) ([]ContainerRequest, error) {
	for _, c := range pod.Spec.InitContainers {
		if _, ok := quantity(c, ResourceGPUMem); ok {
			return nil, fmt.Errorf("init container %q asks for %s: GPU shares are given to regular containers only", c.Name, ResourceGPUMem)
		}
		if _, ok := quantity(c, ResourceGPUCount); ok {
			return nil, fmt.Errorf("init container %q asks for %s: GPU shares are given to regular containers only", c.Name, ResourceGPUCount)
		}
	}
	var out []ContainerRequest
	for i, c := range pod.Spec.Containers {
		mem, err := intQuantity(c, ResourceGPUMem)
		if err != nil {
			return nil, err
		}
		count, err := intQuantity(c, ResourceGPUCount)
		if err != nil {
			return nil, err
		}
		if mem == 0 && count == 0 {
			continue
		}
		if count > maxCardsPerContainer {
			return nil, fmt.Errorf("container %q asks for %d cards (%s); at most %d are supported", c.Name, count, ResourceGPUCount, maxCardsPerContainer)
		}
		if mem > 0 && count > 0 && mem%count != 0 {
			return nil, fmt.Errorf("container %q asks for %d units of %s over %d cards: not divisible; ask for a multiple of %d", c.Name, mem, ResourceGPUMem, count, count)
		}
		out = append(out, ContainerRequest{Index: i, Name: c.Name, Mem: mem, Count: count})
	}
	if len(out) == 0 {
		return nil, ErrNoGPU
	}
	return out, nil
}

// quantity returns the container's limit for name, else its request.
func quantity(c corev1.Container, name corev1.ResourceName) (resource.Quantity, bool) {
	if q, ok := c.Resources.Limits[name]; ok {
		return q, true
	}
	q, ok := c.Resources.Requests[name]
	return q, ok
}

func intQuantity(c corev1.Container, name corev1.ResourceName) (int64, error) {
	q, ok := quantity(c, name)
	if !ok {
		return 0, nil
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("container %q asks for %s %s: must not be negative", c.Name, q.String(), name)
	}
	v, exact := q.AsInt64()
	if !exact || q.MilliValue()%1000 != 0 {
		return 0, fmt.Errorf("container %q asks for %s %s: must be a whole number", c.Name, q.String(), name)
	}
	if lim, ok := c.Resources.Limits[name]; ok {
		if req, ok := c.Resources.Requests[name]; ok && req.Cmp(lim) != 0 {
			return 0, fmt.Errorf("container %q: %s request %s differs from limit %s; they must be equal", c.Name, name, req.String(), lim.String())
		}
	}
	return v, nil
}

// PodModels returns the card models a pod allows (AnnotationModels), or nil
// for any model.
func PodModels(pod *corev1.Pod) []string {
	return ParseModels(pod.Annotations[AnnotationModels])
}

// ParseModels splits a '|' or ',' separated list of models.
func ParseModels(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '|' || r == ',' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ModelAllowed reports whether a card of the given model may be used by a pod
// that allows these models (nil allows all). Names compare case-insensitively,
// with ' ' and '-' alike, once a vendor prefix ("NVIDIA", "Tesla") is
// dropped; an allowed name also matches a model that continues it after a
// separator: "A100" allows "NVIDIA A100-SXM4-80GB" but "A10" does not, and
// the device plugin's label value "H100-80GB-HBM3" allows "NVIDIA H100 80GB
// HBM3".
func ModelAllowed(allowed []string, model string) bool {
	if len(allowed) == 0 {
		return true
	}
	m := modelKey(model)
	for _, a := range allowed {
		a = modelKey(a)
		if len(m) < len(a) || !strings.EqualFold(m[:len(a)], a) {
			continue
		}
		if len(m) == len(a) || m[len(a)] == '-' {
			return true
		}
	}
	return false
}

// modelKey is a model name as ModelAllowed compares it: spaces as '-', the
// vendor prefix dropped.
func modelKey(s string) string {
	s = strings.ReplaceAll(s, " ", "-")
	for _, p := range []string{"NVIDIA-", "Tesla-"} {
		if len(s) > len(p) && strings.EqualFold(s[:len(p)], p) {
			s = s[len(p):]
		}
	}
	return s
}
