package cache

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
)

// Trust tells where a pod's allocation came from.
type Trust string

const (
	// Assumed: decided by this extender, bind in flight or done.
	Assumed Trust = "assumed"
	// Signed: read from annotations that carry this extender's signature.
	Signed Trust = "signed"
	// Claimed: read from unsigned annotations (the old gpushare extender, a
	// pod created with spec.nodeName, or a forgery) and used because it fit
	// after every trusted decision.
	Claimed Trust = "claimed"
	// Fitted: the pod's annotations were missing, wrong or did not fit, so
	// the extender put it where it fits best, to account for its memory.
	Fitted Trust = "fitted"
	// Unplaced: the pod holds memory on the node but fits no card: the node
	// is over-committed (state drift, a card gone).
	Unplaced Trust = "unplaced"
)

// podState is what the cache keeps of one pod.
type podState struct {
	uid       types.UID
	namespace string
	name      string
	node      string
	created   int64 // creation time, Unix ns, to order untrusted pods
	req       *policy.Request
	// claim is what the annotations say (nil when unsigned and malformed).
	claim contract.Allocation
	// alloc is what the cache counts on the node's cards.
	alloc contract.Allocation
	trust Trust
	// bound is false while the bind is in flight (assumed only).
	bound bool
	// fingerprint is what placement read of the pod object (see fingerprint).
	fingerprint string
}

// fingerprint joins what the cache reads of a pod: its node, the decision
// annotations, and its containers' resources. Updates that change none of it
// (status, labels) are skipped.
func fingerprint(pod *corev1.Pod) string {
	var b strings.Builder
	b.WriteString(pod.Spec.NodeName)
	for _, k := range []string{contract.AnnotationAllocation, contract.AnnotationPlanned, contract.AnnotationIndex, contract.AnnotationNode, contract.AnnotationSignature, contract.AnnotationModels} {
		b.WriteByte(0)
		b.WriteString(pod.Annotations[k])
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			b.WriteByte(0)
			b.WriteString(cs[i].Resources.String())
		}
	}
	if pod.Spec.Overhead != nil {
		b.WriteByte(0)
		b.WriteString((&corev1.ResourceRequirements{Limits: pod.Spec.Overhead}).String())
	}
	if pod.Spec.Resources != nil {
		b.WriteByte(0)
		b.WriteString(pod.Spec.Resources.String())
	}
	return b.String()
}

func (p *podState) trusted() bool { return p.trust == Assumed || p.trust == Signed }

// RequestOf builds the placement request of a pod: its GPU containers, the
// models it allows, its CPU and memory. It returns contract.ErrNoGPU for a pod
// without GPU.
// On any error the request still carries the CPU and memory, and no GPU.
func RequestOf(pod *corev1.Pod) (*policy.Request, error) {
	res := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	req := &policy.Request{CPUMilli: res.Cpu().MilliValue(), MemMiB: res.Memory().Value() >> 20, Salt: salt(pod)}
	cs, err := contract.PodRequests(pod)
	if err != nil {
		return req, err
	}
	req.Containers, req.Models = cs, contract.PodModels(pod)
	return req, nil
}

// claimOf reads the allocation a bound pod's annotations claim, checked
// against the pod's own request: every GPU container present with its share
// on the right number of distinct cards. It returns whether the claim is
// signed by key.
//
// Where the device plugin rewrote the record to what the kubelet gave (a
// pod of the same shape took its cards) and kept the extender's signed plan
// beside it, the plan is the claim: the node's signed plans as a whole name
// exactly the cards its pods hold, also while the rewrites land one pod at a
// time, so counting plans never counts a card short.
func claimOf(pod *corev1.Pod, req *policy.Request, key []byte) (contract.Allocation, bool, error) {
	ann := pod.Annotations
	if plan, ok := ann[contract.AnnotationPlanned]; ok && signedBy(key, pod, plan) {
		a, err := contract.ParseAllocation(plan)
		if err == nil && matches(a, req) == nil {
			return a, true, nil
		}
	}
	var a contract.Allocation
	if s, ok := ann[contract.AnnotationAllocation]; ok {
		var err error
		if a, err = contract.ParseAllocation(s); err != nil {
			return nil, false, err
		}
	} else if s, ok := ann[contract.AnnotationIndex]; ok && len(req.Containers) == 1 && req.Containers[0].Cards() == 1 && !req.Containers[0].Whole() {
		// The old extender wrote only the card index for one-card pods.
		idx, err := strconv.Atoi(s)
		if err != nil || idx < 0 {
			return nil, false, fmt.Errorf("%s %q is not a card index", contract.AnnotationIndex, s)
		}
		c := req.Containers[0]
		a = contract.Allocation{c.Index: {idx: c.Mem}}
	} else {
		return nil, false, errors.New("no allocation annotation")
	}
	if err := matches(a, req); err != nil {
		return nil, false, err
	}
	return a, signedBy(key, pod, ann[contract.AnnotationAllocation]), nil
}

// signedBy reports whether the pod's signature is key's over this
// allocation text on the pod's node.
func signedBy(key []byte, pod *corev1.Pod, allocation string) bool {
	sig, ok := pod.Annotations[contract.AnnotationSignature]
	return ok && len(key) > 0 && pod.Annotations[contract.AnnotationNode] == pod.Spec.NodeName &&
		contract.Verify(key, string(pod.UID), pod.Spec.NodeName, allocation, sig)
}

// matches checks that an allocation gives each GPU container of req what it
// asks for (whole cards are checked for count only: their size is the card's).
func matches(a contract.Allocation, req *policy.Request) error {
	if len(a) != len(req.Containers) {
		return fmt.Errorf("allocation names %d containers, pod has %d GPU containers", len(a), len(req.Containers))
	}
	for _, c := range req.Containers {
		cards, ok := a[c.Index]
		if !ok {
			return fmt.Errorf("allocation misses container %d (%s)", c.Index, c.Name)
		}
		if len(cards) != c.Cards() {
			return fmt.Errorf("allocation gives container %s %d cards, it asks for %d", c.Name, len(cards), c.Cards())
		}
		if c.Whole() {
			continue
		}
		for card, u := range cards {
			if u != c.PerCard() {
				return fmt.Errorf("allocation gives container %s %d units on card %d, it asks for %d", c.Name, u, card, c.PerCard())
			}
		}
	}
	return nil
}

// terminal reports whether a pod holds no resources any more.
func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// salt identifies a pod for the policies that draw per pod: a hash of its
// UID (of its namespace and name before the API server gave it one).
func salt(pod *corev1.Pod) uint64 {
	h := fnv.New64a()
	if pod.UID != "" {
		h.Write([]byte(pod.UID))
	} else {
		h.Write([]byte(pod.Namespace + "/" + pod.Name))
	}
	return h.Sum64()
}
