package extender

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/policy"
)

// Bind places the pod on the node: it chooses the cards (those the score
// assumed when they are still free), assumes them in the cache so that no
// concurrent decision can take them, and creates the Binding, which carries
// the decision's annotations onto the pod. If any step fails nothing stays
// assumed.
func (s *Server) Bind(ctx context.Context, args *extenderv1.ExtenderBindingArgs) error {
	if args.PodName == "" || args.PodNamespace == "" || args.Node == "" {
		return fmt.Errorf("%w: podName, podNamespace and node are required", errBadRequest)
	}
	log := klog.FromContext(ctx).WithValues("pod", klog.KRef(args.PodNamespace, args.PodName), "node", args.Node)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.BindTimeoutDuration())
	defer cancel()

	pod, err := s.getPod(ctx, args)
	if err != nil {
		s.metrics.binds.WithLabelValues("error").Inc()
		return err
	}
	if pod.Spec.NodeName != "" {
		s.metrics.binds.WithLabelValues("error").Inc()
		return fmt.Errorf("pod %s is already bound to %s", klog.KObj(pod), pod.Spec.NodeName)
	}
	req, err := cache.RequestOf(pod)
	if errors.Is(err, contract.ErrNoGPU) {
		err = s.bindOnly(ctx, pod, args.Node)
		s.countBind(err)
		return err
	}
	if err != nil {
		s.metrics.binds.WithLabelValues("error").Inc()
		return fmt.Errorf("pod %s: %w", klog.KObj(pod), err)
	}
	alloc, err := s.assume(ctx, pod, req, args.Node)
	if err != nil {
		s.metrics.binds.WithLabelValues("conflict").Inc()
		log.Info("Bind refused", "err", err)
		return err
	}
	s.memo.drop(pod.UID)
	if err := s.record(ctx, pod, args.Node, alloc); err != nil {
		s.cache.Forget(pod.UID)
		s.metrics.binds.WithLabelValues("error").Inc()
		log.Error(err, "Bind failed; decision rolled back")
		return err
	}
	s.cache.Bound(pod.UID)
	s.metrics.binds.WithLabelValues("bound").Inc()
	log.V(2).Info("Bound", "allocation", alloc.String())
	return nil
}

func (s *Server) countBind(err error) {
	if err != nil {
		s.metrics.binds.WithLabelValues("error").Inc()
		return
	}
	s.metrics.binds.WithLabelValues("bound").Inc()
}

// getPod reads the pod from the informer, or from the API server when the
// informer has not seen it yet, and checks its UID.
func (s *Server) getPod(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (*corev1.Pod, error) {
	pod, err := s.pods.Pods(args.PodNamespace).Get(args.PodName)
	if apierrors.IsNotFound(err) {
		pod, err = s.client.CoreV1().Pods(args.PodNamespace).Get(ctx, args.PodName, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s does not exist", args.PodNamespace, args.PodName)
	}
	if err != nil {
		return nil, fmt.Errorf("reading pod %s/%s: %w", args.PodNamespace, args.PodName, err)
	}
	if args.PodUID != "" && pod.UID != args.PodUID {
		return nil, fmt.Errorf("pod %s/%s has uid %s, not %s: it was recreated", args.PodNamespace, args.PodName, pod.UID, args.PodUID)
	}
	return pod, nil
}

// assume chooses the cards and records them in the cache. The cards the
// score assumed win while they still fit; otherwise the policy chooses again
// on the current state.
func (s *Server) assume(ctx context.Context, pod *corev1.Pod, req *policy.Request, node string) (contract.Allocation, error) {
	if ev := s.memo.get(pod.UID); ev != nil {
		if r, ok := ev.result(node); ok && r.fits() {
			a := r.decision.Allocation()
			err := s.cache.Assume(pod, req, node, a)
			if err == nil || !errors.Is(err, cache.ErrDoesNotFit) {
				return a, err
			}
		}
	}
	for attempt := 0; ; attempt++ {
		r := s.evaluate(ctx, req, []string{node}).results[0]
		if !r.known() {
			return nil, fmt.Errorf("node %s is not known to the extender", node)
		}
		if r.miss != nil {
			return nil, fmt.Errorf("pod %s no longer fits node %s: %s", klog.KObj(pod), node, r.miss.unfit.Message(s.unit))
		}
		a := r.decision.Allocation()
		err := s.cache.Assume(pod, req, node, a)
		if err == nil || !errors.Is(err, cache.ErrDoesNotFit) || attempt == 3 {
			return a, err
		}
		// Another bind took the cards between evaluate and Assume: again.
	}
}

// record binds the pod with the decision's annotations on the Binding: the
// API server copies a Binding's annotations onto the pod in the same write
// that sets its node (pods/binding), so the decision and the bind are one
// API call, and a pod is never seen bound without its decision.
func (s *Server) record(ctx context.Context, pod *corev1.Pod, node string, alloc contract.Allocation) error {
	return s.bind(ctx, pod, node, s.decisionAnnotations(pod, node, alloc))
}

// bindOnly binds a pod that asks for no GPU: no decision to record.
func (s *Server) bindOnly(ctx context.Context, pod *corev1.Pod, node string) error {
	return s.bind(ctx, pod, node, nil)
}

// bind creates the pod's Binding to node carrying annotations, with the
// pod's UID as a precondition: a pod deleted and recreated under the same
// name is not bound.
func (s *Server) bind(ctx context.Context, pod *corev1.Pod, node string, annotations map[string]string) error {
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, Annotations: annotations},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	if err := s.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("binding pod %s to %s: %w", klog.KObj(pod), node, err)
	}
	return nil
}

// decisionAnnotations are the annotations that record the decision on the
// pod: the cards and memory the device plugin reads, and the signature the
// cache trusts after a restart.
func (s *Server) decisionAnnotations(pod *corev1.Pod, node string, alloc contract.Allocation) map[string]string {
	cards := alloc.Cards()
	var dev int64
	s.cache.Read(func(_ uint64, lookup func(string) *policy.Node) {
		if n := lookup(node); n != nil {
			if c := n.Card(cards[0]); c != nil {
				dev = c.Total
			}
		}
	})
	a := alloc.String()
	return map[string]string{
		contract.AnnotationIndex:      strconv.Itoa(cards[0]),
		contract.AnnotationPodMem:     strconv.FormatInt(alloc.Total(), 10),
		contract.AnnotationDevMem:     strconv.FormatInt(dev, 10),
		contract.AnnotationAssigned:   "false",
		contract.AnnotationAssumeTime: strconv.FormatInt(time.Now().UnixNano(), 10),
		contract.AnnotationAllocation: a,
		contract.AnnotationNode:       node,
		contract.AnnotationSignature:  contract.Sign(s.key, string(pod.UID), node, a),
	}
}
