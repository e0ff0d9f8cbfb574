package extender

import (
	"fmt"
	"math/rand"
	"sort"
	"strconv"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/internal/fixture"
)

// TestConcurrentBindsNeverOvercommit sends 1,000 pods through filter,
// prioritize and bind at once over 50 nodes of mixed cards, then checks
// every pod's recorded allocation against the card sizes: no card is
// over-committed, and the cache counts exactly what the pods record.
func TestConcurrentBindsNeverOvercommit(t *testing.T) {
	for _, pol := range []string{"binpack", "fgd"} {
		t.Run(pol, func(t *testing.T) { concurrentBinds(t, pol) })
	}
}

func concurrentBinds(t *testing.T, pol string) {
	const nodes, pods = 50, 1000
	rng := rand.New(rand.NewSource(1))
	var objs []runtime.Object
	sizes := map[string]map[int]int64{} // node -> card -> GiB
	var nodeNames []string
	for i := range nodes {
		name := "n" + strconv.Itoa(i)
		nodeNames = append(nodeNames, name)
		n := fixture.MakeNode(name)
		if i%2 == 0 {
			n.Cards("Tesla T4", fixture.GiB(16), fixture.GiB(16), fixture.GiB(16), fixture.GiB(16))
		} else {
			n.Cards("NVIDIA A100-SXM4-80GB", fixture.GiB(80), fixture.GiB(80)).Cards("Tesla T4", fixture.GiB(16))
		}
		objs = append(objs, n.Obj())
		sizes[name] = map[int]int64{}
	}
	for i := range pods {
		p := fixture.MakePod().Name(fmt.Sprintf("p%04d", i))
		switch r := rng.Intn(20); {
		case r == 0:
			p.Container("", "1", "") // a whole card
		case r == 1:
			p.Container("8", "2", "") // 4 GiB on two cards
		case r == 2:
			p.GPUMem(2).GPUMem(3) // two GPU containers
		default:
			p.GPUMem(int64(1 + rng.Intn(12)))
		}
		objs = append(objs, p.Obj())
	}
	e := newEnv(t, pol, objs...)
	for _, n := range e.cache.Inspect("") {
		for _, c := range n.Cards {
			sizes[n.Name][c.Index] = c.Total
		}
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	bound := 0
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// As kube-scheduler: a pod whose bind fails goes round again.
			for attempt := range 20 {
				switch e.scheduleOnce(fmt.Sprintf("p%04d", i), nodeNames, int64(i*100+attempt)) {
				case scheduled:
					mu.Lock()
					bound++
					mu.Unlock()
					return
				case unschedulable:
					return
				}
			}
		}()
	}
	wg.Wait()

	list, err := e.client.CoreV1().Pods("default").List(e.ctx, metav1ListOptions())
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]map[int]int64{}
	recorded := 0
	for _, p := range list.Items {
		if p.Spec.NodeName == "" {
			if _, ok := p.Annotations[contract.AnnotationAllocation]; ok {
				t.Errorf("pending pod %s carries an allocation", p.Name)
			}
			continue
		}
		recorded++
		a, err := contract.ParseAllocation(p.Annotations[contract.AnnotationAllocation])
		if err != nil {
			t.Fatalf("pod %s: %v", p.Name, err)
		}
		if used[p.Spec.NodeName] == nil {
			used[p.Spec.NodeName] = map[int]int64{}
		}
		for card, u := range a.PerCard() {
			used[p.Spec.NodeName][card] += u
		}
	}
	if recorded != bound {
		t.Errorf("%d binds succeeded, %d pods are bound", bound, recorded)
	}
	if bound < pods/4 {
		t.Errorf("only %d of %d pods bound: the test exercised too little", bound, pods)
	}
	var capacity, allocated int64
	for node, cards := range sizes {
		for card, total := range cards {
			capacity += total
			allocated += used[node][card]
			if used[node][card] > total {
				t.Errorf("%s card %d over-committed: %d of %d GiB", node, card, used[node][card], total)
			}
		}
	}
	// The cache, once the informer caught up, counts exactly the recorded use.
	e.eventually("the cache counts every recorded share", func() bool {
		for _, n := range e.cache.Inspect("") {
			for _, c := range n.Cards {
				if c.Allocated != used[n.Name][c.Index] {
					return false
				}
			}
		}
		return true
	})
	t.Logf("%s: %d of %d pods bound, %d of %d GiB allocated", pol, bound, pods, allocated, capacity)
}

type outcome int

const (
	scheduled outcome = iota
	unschedulable
	bindFailed
)

// scheduleOnce is one scheduling cycle of kube-scheduler for the pod: filter,
// prioritize, a random pick among the best-scored nodes, bind.
func (e *env) scheduleOnce(name string, nodes []string, seed int64) outcome {
	pod := e.pod("default", name)
	var fr extenderv1.ExtenderFilterResult
	e.post(filterPath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes}, &fr)
	if fr.NodeNames == nil || len(*fr.NodeNames) == 0 {
		return unschedulable
	}
	var pr extenderv1.HostPriorityList
	e.post(prioritizePath, extenderv1.ExtenderArgs{Pod: pod, NodeNames: fr.NodeNames}, &pr)
	sort.SliceStable(pr, func(a, b int) bool { return pr[a].Score > pr[b].Score })
	top := 1
	for top < len(pr) && pr[top].Score == pr[0].Score {
		top++
	}
	best := pr[rand.New(rand.NewSource(seed)).Intn(top)]
	var br extenderv1.ExtenderBindingResult
	e.post(bindPath, extenderv1.ExtenderBindingArgs{PodName: pod.Name, PodNamespace: pod.Namespace, PodUID: pod.UID, Node: best.Host}, &br)
	if br.Error != "" {
		return bindFailed
	}
	return scheduled
}
