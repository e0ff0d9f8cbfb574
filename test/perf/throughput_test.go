// Package perf measures scheduling throughput on the local cluster's real
// kube-scheduler, with and without the gpupack extender, and what the
// extender costs on the way: its filter and prioritize latencies as
// kube-scheduler sees them and its resident memory. The benchmark:
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./perf/
//
// sized by GPUPACK_THROUGHPUT_NODES and GPUPACK_THROUGHPUT_PODS (make
// throughput NODES=... PODS=...). The package's tests check only the
// benchmark's own helpers; they need no cluster.
package perf

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/test/cluster"
)

// stallLimit fails a run that binds no pod for this long: something is
// broken (a pod that fits nowhere, a component that died), however slow
// the machine. A slow run is never an error.
const stallLimit = 5 * time.Minute

// BenchmarkThroughput creates the nodes (1,000 unless
// GPUPACK_THROUGHPUT_NODES says otherwise) of 8 x A100-80GB and schedules
// the GPU pods (2,000, or GPUPACK_THROUGHPUT_PODS) of 1-16 GiB through
// kube-scheduler, once with the gpupack profile (extender filter,
// prioritize and bind) and once with kube-scheduler alone (a second
// kube-scheduler, without the extender: the first one's default profile
// calls the extender too) treating aliyun.com/gpu-mem as a plain extended
// resource. It reports pods per
// second for both and their ratio; the extender's filter, prioritize and
// bind latencies as kube-scheduler sees them (timed by a reverse proxy
// between the two, from the request's headers in to its last byte out;
// GPUPACK_THROUGHPUT_PROXY=false leaves the proxy out, to see what its hop
// costs), beside the extender's own request-duration histogram; the CPU
// each process (kube-apiserver, etcd, the schedulers, the extender, the
// benchmark itself) spends per pod in each run, which on a machine whose
// cores they all share is what the ratio comes from; and the extender's
// resident memory.
func BenchmarkThroughput(b *testing.B) {
	sz, err := sizeFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	proxy, err := proxyFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	profile := os.Getenv(profileEnv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "gpp")
	if err != nil {
		b.Fatal(err)
	}
	// The cluster's folder (its binaries, etcd's data, the logs: hundreds
	// of MiB at 5,000 nodes) goes when the cluster is down, unless the
	// benchmark failed: then its logs are what to read.
	defer func() {
		if b.Failed() {
			b.Logf("logs kept in %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Logf("removing %s: %v", dir, err)
		}
	}()
	opts := cluster.Options{Dir: dir, Out: os.Stderr, PlainScheduler: true}
	timer := newVerbTimer()
	if proxy {
		opts.ExtenderProxy = timer.wrap
	}
	c, err := cluster.Up(ctx, opts)
	if err != nil {
		b.Fatalf("%v (logs in %s)", err, dir)
	}
	defer c.Down()
	client, err := benchClient(c.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := createNodes(ctx, client, sz.nodes); err != nil {
		b.Fatal(err)
	}
	if err := waitExtenderNodes(ctx, c.InspectURL(), sz.nodes); err != nil {
		b.Fatalf("%v (logs in %s)", err, dir)
	}
	time.Sleep(2 * time.Second) // kube-scheduler's informers catch up with the nodes
	b.Logf("%d nodes created and known to the extender in %s", sz.nodes, time.Since(start).Round(time.Millisecond))
	idle, err := readMemory(c.ExtenderPID())
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("extender with %d nodes and no pods: %s", sz.nodes, idle)

	// What each process spends per pod: the extender's own cost, and what
	// it adds to kube-scheduler's and kube-apiserver's, on the same cores.
	pids := c.Processes()
	pids["benchmark"] = os.Getpid()
	var rates [2]float64
	var busy memory
	var served map[string]quantiles
	for i, sched := range []string{cluster.SchedulerName, cluster.PlainSchedulerName} {
		ns := fmt.Sprintf("bench-%d", i)
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		before, err := cpuTimes(pids)
		if err != nil {
			b.Fatal(err)
		}
		stopProfile := func() (int, error) { return 0, nil }
		if sched == cluster.SchedulerName && profile != "" {
			stopProfile = profileExtender(ctx, c.ExtenderProfileURL, profile)
		}
		r, err := schedule(ctx, client, ns, sched, sz)
		if err != nil {
			b.Fatalf("%s: %v (logs in %s)", sched, err, dir)
		}
		after, err := cpuTimes(pids)
		if err != nil {
			b.Fatal(err)
		}
		if parts, err := stopProfile(); err != nil {
			b.Errorf("profiling the extender: %v", err)
		} else if parts > 0 {
			b.Logf("the extender's CPU profile over the gpupack run: %d parts of %d s, go tool pprof %s.*", parts, profilePart, profile)
		}
		rates[i] = float64(sz.pods) / r.bound.Seconds()
		b.Logf("%s: %d pods created in %s, all bound on %d nodes in %s: %.1f pods/s",
			sched, sz.pods, r.created.Round(time.Millisecond), sz.nodes, r.bound.Round(time.Millisecond), rates[i])
		spent := cpuPerPod(before, after, sz.pods)
		b.Logf("%s: CPU per pod, by process: %s", sched, spent)
		run, scheduler := "default", "kube-scheduler-plain"
		if sched == cluster.SchedulerName {
			run, scheduler = "gpupack", "kube-scheduler"
		}
		b.ReportMetric(spent.total(), run+"-cpu-ms/pod")
		b.ReportMetric(spent[scheduler], run+"-scheduler-cpu-ms/pod")
		if sched == cluster.SchedulerName {
			b.ReportMetric(spent["gpupack-extender"], "extender-cpu-ms/pod")
			// Memory first: the scrape below makes the extender gather
			// every card's series.
			if busy, err = readMemory(c.ExtenderPID()); err != nil {
				b.Fatal(err)
			}
			b.Logf("extender after the gpupack run, its %d pods cached: %s", sz.pods, busy)
			if served, err = scrapeDurations(ctx, c.ExtenderMetricsURL(), proxiedVerbs); err != nil {
				b.Fatal(err)
			}
			answers, err := scrapeAnswers(ctx, c.ExtenderMetricsURL())
			if err != nil {
				b.Fatal(err)
			}
			if all := answers["rated"] + answers["kept"]; all > 0 {
				b.Logf("extender's answers about nodes: %.0f rated afresh, %.0f kept from a pod of the same shape (%.1f%% rated)", answers["rated"], answers["kept"], 100*answers["rated"]/all)
				b.ReportMetric(100*answers["rated"]/all, "rated-%")
			}
		}
		// Free the nodes for the next run: pod by pod, as one
		// DeleteCollection of tens of thousands of pods can outlast the
		// API server's request timeout (60 s).
		if err := deletePods(ctx, client, ns, sz.pods); err != nil {
			b.Fatal(err)
		}
		// The extender, watching every GPU pod, would otherwise spend the
		// next run's CPU on these deletions.
		if err := waitExtenderReleased(ctx, c.InspectURL()); err != nil {
			b.Fatalf("%v (logs in %s)", err, dir)
		}
		time.Sleep(2 * time.Second) // and kube-scheduler's informers
	}
	end, err := readMemory(c.ExtenderPID())
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("extender at the end (peak since start, including a /metrics scrape and the plain run's pods in its cache): %s", end)

	seen := timer.quantiles()
	for _, verb := range proxiedVerbs {
		s, e := seen[verb], served[verb]
		if !proxy {
			b.Logf("%-10s as the extender serves it (histogram, %d calls): p50 %s p99 %s (%s=false: no proxy timed it as kube-scheduler sees it)",
				verb, e.count, ms(e.p50), ms(e.p99), proxyEnv)
			continue
		}
		b.Logf("%-10s as kube-scheduler sees it (%d calls): p50 %s p99 %s; as the extender serves it (histogram, %d calls): p50 %s p99 %s",
			verb, s.count, ms(s.p50), ms(s.p99), e.count, ms(e.p50), ms(e.p99))
	}
	b.ReportMetric(rates[0], "gpupack-pods/s")
	b.ReportMetric(rates[1], "default-pods/s")
	b.ReportMetric(rates[0]/rates[1], "ratio")
	for _, verb := range []string{"filter", "prioritize"} {
		if proxy {
			b.ReportMetric(seen[verb].p50.Seconds()*1000, verb+"-p50-ms")
			b.ReportMetric(seen[verb].p99.Seconds()*1000, verb+"-p99-ms")
		}
		b.ReportMetric(served[verb].p50.Seconds()*1000, verb+"-served-p50-ms")
		b.ReportMetric(served[verb].p99.Seconds()*1000, verb+"-served-p99-ms")
	}
	b.ReportMetric(mib(busy.peak), "extender-peak-MiB")
	b.ReportMetric(mib(busy.rss), "extender-rss-MiB")
}

// benchClient is the benchmark's own API client: protobuf, as the control
// plane's components talk, and a rate limit well above what it asks, so
// that creating nodes and pods is bounded by the API server, not by the
// client.
func benchClient(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "gpupack-throughput"
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	rc.QPS, rc.Burst = 5000, 10000
	return kubernetes.NewForConfig(rc)
}

func createNodes(ctx context.Context, client kubernetes.Interface, nodes int) error {
	inv := &contract.Inventory{}
	for i := range 8 {
		inv.Cards = append(inv.Cards, contract.Card{Index: i, UUID: fmt.Sprintf("GPU-bench-%d", i), Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, Healthy: true})
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("96"), corev1.ResourceMemory: resource.MustParse("1Ti"), corev1.ResourcePods: resource.MustParse("110"),
		contract.ResourceGPUMem: resource.MustParse("640"), contract.ResourceGPUCount: resource.MustParse("8"),
	}
	return parallel(nodes, 50, func(i int) error {
		name := nodeName(i)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:      map[string]string{contract.LabelGPUShare: "true", corev1.LabelHostname: name},
			Annotations: map[string]string{contract.AnnotationInventory: inv.String()},
		}}
		created, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		created.Status = corev1.NodeStatus{Capacity: capacity, Allocatable: capacity.DeepCopy(),
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}}}
		_, err = client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	})
}

func nodeName(i int) string { return fmt.Sprintf("bench-%04d", i) }

// run is how long one scheduler took: to create the pods, and from the
// first creation to the last bind.
type run struct{ created, bound time.Duration }

// schedule creates the pods and waits, watching them, until every one is
// bound; it fails only when binding stalls for stallLimit.
func schedule(ctx context.Context, client kubernetes.Interface, ns, scheduler string, sz size) (run, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := make([]int64, sz.pods)
	for i := range sizes {
		sizes[i] = 1 + rng.Int64N(maxPodGiB)
	}
	w := newBindWatch(sz.pods)
	wctx, stop := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	defer factory.Shutdown()
	defer stop()
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: w.see, UpdateFunc: func(_, obj any) { w.see(obj) }}); err != nil {
		return run{}, err
	}
	factory.Start(wctx.Done())
	if !cache.WaitForCacheSync(wctx.Done(), inf.HasSynced) {
		return run{}, fmt.Errorf("watching the pods of %s: %w", ns, ctx.Err())
	}

	start := time.Now()
	w.reset(start)
	err := parallel(sz.pods, 50, func(i int) error {
		lim := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), contract.ResourceGPUMem: *resource.NewQuantity(sizes[i], resource.DecimalSI)}
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p-" + strconv.Itoa(i), Namespace: ns},
			Spec: corev1.PodSpec{SchedulerName: scheduler, Containers: []corev1.Container{{
				Name: "c", Image: "train", Resources: corev1.ResourceRequirements{Limits: lim, Requests: lim.DeepCopy()},
			}}},
		}
		_, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return run{}, err
	}
	r := run{created: time.Since(start)}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-w.done:
			r.bound = w.progress().last.Sub(start)
			return r, nil
		case <-ctx.Done():
			return run{}, ctx.Err()
		case <-tick.C:
			if p := w.progress(); time.Since(p.last) > stallLimit {
				return run{}, fmt.Errorf("no pod bound for %s: %d of %d bound", stallLimit, p.bound, sz.pods)
			}
		}
	}
}

// deletePods deletes the pods schedule made, at once (no kubelet runs
// them).
func deletePods(ctx context.Context, client kubernetes.Interface, ns string, pods int) error {
	zero := int64(0)
	return parallel(pods, 50, func(i int) error {
		err := client.CoreV1().Pods(ns).Delete(ctx, "p-"+strconv.Itoa(i), metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// bindWatch counts pods as a watch sees them bound.
type bindWatch struct {
	want int
	done chan struct{}
	mu   sync.Mutex
	seen map[string]bool
	last time.Time // of the latest first sight of a bound pod
}

func newBindWatch(want int) *bindWatch {
	return &bindWatch{want: want, done: make(chan struct{}), seen: map[string]bool{}, last: time.Now()}
}

func (w *bindWatch) reset(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = t
}

func (w *bindWatch) see(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[p.Name] {
		return
	}
	w.seen[p.Name] = true
	w.last = time.Now()
	if len(w.seen) == w.want {
		close(w.done)
	}
}

type bindProgress struct {
	bound int
	last  time.Time
}

func (w *bindWatch) progress() bindProgress {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bindProgress{bound: len(w.seen), last: w.last}
}

func parallel(n, workers int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// cpuTimes reads the CPU time (user and system) each process has spent
// so far, in seconds.
func cpuTimes(pids map[string]int) (map[string]float64, error) {
	t := map[string]float64{}
	for name, pid := range pids {
		p, err := procfs.NewProc(pid)
		if err != nil {
			return nil, fmt.Errorf("%s (process %d): %w", name, pid, err)
		}
		st, err := p.Stat()
		if err != nil {
			return nil, fmt.Errorf("%s (process %d): %w", name, pid, err)
		}
		t[name] = st.CPUTime()
	}
	return t, nil
}

// cpuSpent is CPU milliseconds per pod, by process.
type cpuSpent map[string]float64

// cpuPerPod is what each process spent between two readings, per pod.
func cpuPerPod(before, after map[string]float64, pods int) cpuSpent {
	s := cpuSpent{}
	for name, t := range after {
		s[name] = (t - before[name]) * 1000 / float64(pods)
	}
	return s
}

func (s cpuSpent) total() float64 {
	var t float64
	for _, v := range s {
		t += v
	}
	return t
}

// String lists the processes, the costliest first (ties by name), and the
// total.
func (s cpuSpent) String() string {
	names := slices.Collect(maps.Keys(s))
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(s[b], s[a]), strings.Compare(a, b)) })
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %.2f ms, ", n, s[n])
	}
	fmt.Fprintf(&b, "all %.2f ms", s.total())
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", d.Seconds()*1000) }

func mib(bytes uint64) float64 { return float64(bytes) / (1 << 20) }

// profilePart is how long each part of the extender's CPU profile lasts.
const profilePart = 5

// profileExtender reads the extender's CPU profile (from url(seconds)) in
// parts of profilePart seconds, each written to prefix.1, prefix.2, ...,
// until the returned stop is called: it then drops the part under way and
// tells how many were written. go tool pprof reads the parts together.
func profileExtender(ctx context.Context, url func(seconds int) string, prefix string) (stop func() (int, error)) {
	ctx, cancel := context.WithCancel(ctx)
	var parts int
	var failed error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url(profilePart), nil)
			if err != nil {
				failed = err
				return
			}
			data, err := get(req)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = os.WriteFile(fmt.Sprintf("%s.%d", prefix, parts+1), data, 0o644)
			}
			if err != nil {
				failed = err
				return
			}
			parts++
		}
	}()
	return func() (int, error) {
		cancel()
		<-done
		return parts, failed
	}
}
