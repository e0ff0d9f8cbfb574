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

// Trust tells where a pod's allocation came from, as /inspect shows it (a
// pod's state, less whether its bind is done).
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

// state is where a pod stands in the cache. A pod has one from the moment
// the extender assumes it or the informer shows it bound, until it ends or
// is deleted ("none" below: a pod that is only pending is learned, never
// counted).
//
// The states, and what moves a pod between them ("-": it stays; read and
// place are below):
//
//	           | Assume   Bound    Forget | the informer shows the pod:           | recount
//	           |                          | pending  on its node  on another node | of its node
//	-----------+--------------------------+---------------------------------------+------------
//	none       | binding  -        -      | -        read         read            | -
//	binding    | refused  assumed  none   | -        assumed      read            | -
//	assumed    | refused  -        -      | -        -            read            | -
//	signed     | refused  -        -      | -        -            read            | -
//	claimed,   | refused  -        -      | -        read if      read            | place
//	fitted,    |                          |          changed                      |
//	unplaced   |                          |                                       |
//
// In every state a pod that ends (Succeeded, Failed) or is deleted goes back
// to none, and its node is recounted without it.
//
// read: the pod's annotations decide (claimOf). A decision that this
// extender signed for this node is signed. Anything else is untrusted, and
// placed by the recount of its node that follows at once.
//
// place: a recount (a pod added, changed or gone on the node, or a Node
// update that changes its cards or allocatable CPU and memory) counts the
// trusted decisions (binding, assumed, signed) first, then each untrusted
// pod, oldest first: claimed where its annotations say if those cards have
// room, else fitted where gpushare's best fit puts it, else unplaced (the
// node is over-committed; its memory is counted on no card).
//
// So a trusted decision is never read again from the pod while it stays on
// its node: editing the annotations of a running pod does not move its
// share; and an untrusted pod never displaces a trusted one.
//
// A pod with no GPU request (or one the extender rejects) is in noGPU while
// bound: its CPU and memory count, no card.
type state uint8

const (
	noGPU    state = iota
	binding        // assumed by this extender, the bind in flight
	assumed        // assumed by this extender, the bind done
	signed         // read: this extender's signed decision
	claimed        // untrusted: where its annotations say
	fitted         // untrusted: where it fits best
	unplaced       // untrusted: on no card
)

// trusted reports whether the pod's allocation is counted before any
// untrusted pod's: this extender decided it.
func (s state) trusted() bool { return s == binding || s == assumed || s == signed }

// seenBound is the state once the bind is known done: binding becomes
// assumed; every other state stays.
func (s state) seenBound() state {
	if s == binding {
		return assumed
	}
	return s
}

// trust is the state as /inspect shows it.
func (s state) trust() Trust {
	switch s {
	case binding, assumed:
		return Assumed
	case signed:
		return Signed
	case claimed:
		return Claimed
	case fitted:
		return Fitted
	case unplaced:
		return Unplaced
	}
	return ""
}

// podState is what the cache keeps of one pod.
type podState struct {
	uid       types.UID
	namespace string
	name      string
	node      string
	created   int64 // creation time, Unix ns, to order untrusted pods
	req       *policy.Request
	state     state
	// claim is what unsigned annotations say (nil when malformed).
	claim contract.Allocation
	// alloc is what the cache counts on the node's cards (nil: none).
	alloc contract.Allocation
	// fingerprint is what placement read of the pod object (see
	// fingerprint); "" for a pod the extender assumed.
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
