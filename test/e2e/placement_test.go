package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/gpupack/gpupack/contract"
)

// TestPlacement: shares land as the policy (binpack) says, the kubelet
// allocates them through the device plugin, the jobs run and end.
func TestPlacement(t *testing.T) {
	ns := namespace(t)
	// Inside a node, binpack takes the card with the least free left: on
	// mixed-0 (2 x 80 GiB, 2 x 15 GiB) a 70 GiB pod takes an A100, and a
	// 10 GiB pod then fills that card to the brim rather than a T4 (5 left)
	// or the other A100 (70 left).
	create(t, onNode(gpuPod(ns, "big", ctr{mem: 70, args: longJob}), "mixed-0"))
	big := waitPhase(t, ns, "big", corev1.PodRunning, time.Minute)
	create(t, onNode(gpuPod(ns, "fill", ctr{mem: 10, args: longJob}), "mixed-0"))
	fill := waitPhase(t, ns, "fill", corev1.PodRunning, time.Minute)
	if allocation(t, fill).Cards()[0] != allocation(t, big).Cards()[0] {
		t.Errorf("binpack: fill went to card %v, big is on card %v", allocation(t, fill).Cards(), allocation(t, big).Cards())
	}
	// Across nodes, binpack takes the node with the least free memory left
	// that fits: t4-0 (60 GiB) before mixed-0 (110 left) and the A100 nodes.
	create(t, gpuPod(ns, "small", ctr{mem: 2, args: longJob}))
	if small := waitPhase(t, ns, "small", corev1.PodRunning, time.Minute); small.Spec.NodeName != "t4-0" {
		t.Errorf("binpack: small went to %s, want t4-0", small.Spec.NodeName)
	}
	for _, p := range []*corev1.Pod{big, fill} {
		if p.Annotations[contract.AnnotationAssigned] != "true" && !eventually(func() bool { return assigned(ns, p.Name) }) {
			t.Errorf("pod %s never marked assigned", p.Name)
		}
	}
	// A short job runs and ends; its pod succeeds.
	create(t, gpuPod(ns, "short", ctr{mem: 4, args: shortJob}))
	waitPhase(t, ns, "short", corev1.PodSucceeded, time.Minute)
	checkNoOvercommit(t)
}

func assigned(ns, name string) bool {
	p, err := client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	return err == nil && p.Annotations[contract.AnnotationAssigned] == "true"
}

func eventually(cond func() bool) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// TestShapes: several GPU containers in one pod, a share on each of two
// cards, whole cards.
func TestShapes(t *testing.T) {
	ns := namespace(t)
	create(t, gpuPod(ns, "two-containers", ctr{mem: 3, args: longJob}, ctr{mem: 5, args: longJob}))
	create(t, gpuPod(ns, "two-cards", ctr{mem: 20, count: 2, args: longJob}))
	create(t, gpuPod(ns, "whole", ctr{count: 2}))
	two := waitPhase(t, ns, "two-containers", corev1.PodRunning, time.Minute)
	if a := allocation(t, two); len(a) != 2 || a.Total() != 8 {
		t.Errorf("two containers: allocation %s", a)
	}
	cards := waitPhase(t, ns, "two-cards", corev1.PodRunning, time.Minute)
	if a := allocation(t, cards); len(a[0]) != 2 || a[0][a.Cards()[0]] != 10 || a[0][a.Cards()[1]] != 10 {
		t.Errorf("two cards: allocation %s", a)
	}
	whole := waitPhase(t, ns, "whole", corev1.PodRunning, time.Minute)
	a := allocation(t, whole)
	if len(a[0]) != 2 {
		t.Errorf("whole cards: allocation %s", a)
	}
	checkNoOvercommit(t)
}

// TestTooBigStaysPending: no card has 100 GiB; the pod stays Pending with
// the extender's reason in its events.
func TestTooBigStaysPending(t *testing.T) {
	ns := namespace(t)
	create(t, gpuPod(ns, "huge", ctr{mem: 100}))
	var msg string
	waitFor(t, time.Minute, "a FailedScheduling event", func() (bool, error) {
		evs, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", "huge").String(),
		})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "FailedScheduling" {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if !strings.Contains(msg, "100 GiB") {
		t.Errorf("FailedScheduling does not give the extender's reason: %q", msg)
	}
	p, _ := client.CoreV1().Pods(ns).Get(context.Background(), "huge", metav1.GetOptions{})
	if p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
		t.Errorf("huge: node %q phase %s", p.Spec.NodeName, p.Status.Phase)
	}
}

// TestDeleteFreesShares: a card filled to the brim takes a new pod once
// the pods on it are deleted.
func TestDeleteFreesShares(t *testing.T) {
	ns := namespace(t)
	// Every 15 GiB T4 and 80 GiB A100 card: fill the t4 node's four cards.
	for _, name := range []string{"t1", "t2", "t3", "t4"} {
		p := gpuPod(ns, name, ctr{mem: 15, args: longJob})
		p.Annotations = map[string]string{contract.AnnotationModels: "T4"}
		p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "t4-0"}
		create(t, p)
		waitPhase(t, ns, name, corev1.PodRunning, time.Minute)
	}
	next := gpuPod(ns, "next", ctr{mem: 15, args: longJob})
	next.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "t4-0"}
	create(t, next)
	time.Sleep(3 * time.Second)
	if p, _ := client.CoreV1().Pods(ns).Get(context.Background(), "next", metav1.GetOptions{}); p.Spec.NodeName != "" {
		t.Fatalf("next was placed on a full node: %s", p.Spec.NodeName)
	}
	if err := client.CoreV1().Pods(ns).Delete(context.Background(), "t2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ns, "next", corev1.PodRunning, 2*time.Minute)
	checkNoOvercommit(t)
}
