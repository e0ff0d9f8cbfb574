package extender

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/internal/fixture"
)

// BenchmarkHTTP5000 measures filter and prioritize as kube-scheduler sees
// them: a POST over a real connection with the JSON ExtenderArgs it sends
// in nodeCacheCapable mode (a full pod and 5,000 node names, as with
// percentageOfNodesToScore: 100), timed until the answer is read, over the
// cluster of BenchmarkFilterPrioritize5000, in each regime (see regimes:
// cold and newshare, every node evaluated; warm, one node changed between
// calls).
//
// fill is the default policy; binpack/best and fill/best are under
// filterKeeps: best (as the chart configures it): filter answers the best
// nodes only, and prioritize is asked about those.
//
// Each iteration also sends the same request to a no-work extender
// (noWork: it decodes the ExtenderArgs with encoding/json and passes every
// node), in alternating order, so that the ratio is measured under the same
// load. Each sub-benchmark reports gpupack's p50-ms and p99-ms per call,
// the no-work extender's nowork-p50-ms and nowork-p99-ms, their ratio
// p99-x, and gc/op, the garbage collections per iteration (both calls and
// the client). Percentiles want many calls: run it with e.g.
//
//	go test ./extender/ -run '^$' -bench BenchmarkHTTP5000 -benchtime 1000x -count 3
func BenchmarkHTTP5000(b *testing.B) {
	for _, pol := range []string{"binpack", "fgd", "fill", "binpack/best", "fill/best"} {
		b.Run(pol, func(b *testing.B) {
			pol, keeps, _ := strings.Cut(pol, "/")
			srv, names := cluster5000(b, pol, func(c *config.Config) { c.FilterKeeps = config.FilterKeeps(keeps) })
			benchHTTPVerbs(b, srv, names, 20)
		})
	}
}

// BenchmarkHTTPTrace5000 is BenchmarkHTTP5000 on a busy cluster of the
// trace's own kind: the openb trace's 1,213 nodes four times over (4,852
// nodes), filled by replaying the trace's default workload through the
// policy to 100% arrived (traceCluster), with the workload estimate
// learned from the trace's pods, asked about a pod of half a card. Most
// nodes cannot take it, so filter answers thousands of reasons. It is
// skipped where the trace is not (../shared/traces).
func BenchmarkHTTPTrace5000(b *testing.B) {
	for _, pol := range []string{"fill", "binpack"} {
		b.Run(pol, func(b *testing.B) {
			srv, names := traceCluster(b, pol, 4)
			benchHTTPVerbs(b, srv, names, 500)
		})
	}
}

// benchHTTPVerbs runs benchHTTP for filter and prioritize in each regime,
// with pods of one share of gpu units.
func benchHTTPVerbs(b *testing.B, srv *Server, names []string, gpu int64) {
	gp := httptest.NewServer(srv.Handler())
	defer gp.Close()
	nw := httptest.NewServer(noWork())
	defer nw.Close()
	for _, verb := range []string{"filter", "prioritize"} {
		for _, rg := range regimes {
			b.Run(verb+"/"+string(rg), func(b *testing.B) {
				benchHTTP(b, srv, gp, nw, verb, rg, names, gpu)
			})
		}
	}
}

func benchHTTP(b *testing.B, srv *Server, gp, nw *httptest.Server, verb string, rg regime, names []string, gpu int64) {
	client := gp.Client()
	rng := rand.New(rand.NewSource(2))
	var ours, none []time.Duration
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		pod := fullPod(fmt.Sprintf("bench-%s-%d", verb, i), int64(1+i%1000), gpu)
		switch rg {
		case warm:
			pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1")
			touch(b, srv, names[rng.Intn(len(names))], i)
		case newShare:
			setNewShare(pod, i)
		}
		args := extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}
		body := mustJSON(b, &args)
		if verb == "prioritize" {
			// kube-scheduler asks for scores of the nodes that passed
			// its filters, the extender's among them.
			var fr extenderv1.ExtenderFilterResult
			if err := json.Unmarshal(post(b, client, gp.URL+Prefix+"/filter", body, nil), &fr); err != nil {
				b.Fatal(err)
			}
			args.NodeNames = fr.NodeNames
			body = mustJSON(b, &args)
		}
		b.StartTimer()
		url := Prefix + "/" + verb
		if i%2 == 0 {
			post(b, client, gp.URL+url, body, &ours)
			post(b, client, nw.URL+url, body, &none)
		} else {
			post(b, client, nw.URL+url, body, &none)
			post(b, client, gp.URL+url, body, &ours)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	p99, np99 := percentile(ours, 0.99), percentile(none, 0.99)
	b.ReportMetric(ms(percentile(ours, 0.50)), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(percentile(none, 0.50)), "nowork-p50-ms")
	b.ReportMetric(ms(np99), "nowork-p99-ms")
	b.ReportMetric(float64(p99)/float64(np99), "p99-x")
	b.ReportMetric(float64(after.NumGC-before.NumGC)/float64(b.N), "gc/op")
}

// post sends body and reads the whole answer, adding the time it took to
// times when times is not nil.
func post(b *testing.B, client *http.Client, url string, body []byte, times *[]time.Duration) []byte {
	start := time.Now()
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if times != nil {
		*times = append(*times, time.Since(start))
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %d %v %s", url, resp.StatusCode, err, out)
	}
	return out
}

func mustJSON(b *testing.B, v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// percentile is the nearest-rank q-quantile of d.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// noWork is an extender that does no work: it decodes the request as any
// extender must, and passes every node (filter) or scores each 0
// (prioritize).
func noWork() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, r *http.Request, answer func(names []string) any) {
		var args extenderv1.ExtenderArgs
		if err := json.NewDecoder(r.Body).Decode(&args); err != nil || args.NodeNames == nil {
			http.Error(w, fmt.Sprint("bad request: ", err), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer(*args.NodeNames))
	}
	mux.HandleFunc("POST "+Prefix+"/filter", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func(names []string) any {
			return &extenderv1.ExtenderFilterResult{NodeNames: &names, FailedNodes: extenderv1.FailedNodesMap{}, FailedAndUnresolvableNodes: extenderv1.FailedNodesMap{}}
		})
	})
	mux.HandleFunc("POST "+Prefix+"/prioritize", func(w http.ResponseWriter, r *http.Request) {
		reply(w, r, func(names []string) any {
			out := make(extenderv1.HostPriorityList, len(names))
			for i, n := range names {
				out[i] = extenderv1.HostPriority{Host: n}
			}
			return out
		})
	})
	return mux
}

// fullPod is a GPU pod (one share of gpu units, cpuMilli of CPU) as
// kube-scheduler holds it: created by a ReplicaSet, with the labels,
// annotations, managed fields, service-account volume, probes,
// tolerations and status conditions the API server and controllers add.
func fullPod(name string, cpuMilli, gpu int64) *corev1.Pod {
	pod := fixture.MakePod().Name(name).GPUMem(gpu).Obj()
	pod.UID = types.UID(fmt.Sprintf("6f1c2d3e-%08x-4b5a-9c8d-%012x", len(name), cpuMilli) + name)
	pod.Namespace = "ml-training"
	pod.GenerateName = "trainer-7d9f8b6c5-"
	pod.ResourceVersion = "184467440"
	pod.CreationTimestamp = metav1.Unix(1764547200, 0)
	pod.Labels = map[string]string{"app.kubernetes.io/name": "trainer", "app.kubernetes.io/instance": "llm-finetune", "pod-template-hash": "7d9f8b6c5", "team": "research"}
	pod.Annotations["kubectl.kubernetes.io/default-container"] = "c0"
	pod.Annotations["prometheus.io/scrape"] = "true"
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "trainer-7d9f8b6c5", UID: "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", Controller: ptr(true), BlockOwnerDeletion: ptr(true)}}
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		Time: &pod.CreationTimestamp, FieldsType: "FieldsV1",
		FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:generateName":{},"f:labels":{".":{},"f:app.kubernetes.io/instance":{},"f:app.kubernetes.io/name":{},"f:pod-template-hash":{},"f:team":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"c0\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"NCCL_DEBUG\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:resources":{".":{},"f:limits":{".":{},"f:aliyun.com/gpu-mem":{},"f:cpu":{}}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{}}}`),
	}}
	c := &pod.Spec.Containers[0]
	c.Image = "registry.example.com/research/trainer:2026.11.3"
	c.Command = []string{"python", "-m", "trainer.main"}
	c.Args = []string{"--config=/etc/trainer/config.yaml", "--epochs=3"}
	c.Env = []corev1.EnvVar{{Name: "NCCL_DEBUG", Value: "WARN"}, {Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}}}
	c.Ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}
	cpu := *resource.NewMilliQuantity(cpuMilli, resource.DecimalSI)
	c.Resources.Limits[corev1.ResourceCPU] = cpu
	c.Resources.Requests[corev1.ResourceCPU] = cpu
	c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("64Gi")
	c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("64Gi")
	c.VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access-x7k2p", ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}}
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(9090), Scheme: corev1.URISchemeHTTP}}, PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
	c.TerminationMessagePath = "/dev/termination-log"
	c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	c.ImagePullPolicy = corev1.PullIfNotPresent
	pod.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr(int32(420)),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr(int64(3607)), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
	}}}}
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	pod.Spec.TerminationGracePeriodSeconds = ptr(int64(30))
	pod.Spec.DNSPolicy = corev1.DNSClusterFirst
	pod.Spec.ServiceAccountName = "default"
	pod.Spec.SchedulerName = "default-scheduler"
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{}
	pod.Spec.Priority = ptr(int32(0))
	pod.Spec.EnableServiceLinks = ptr(true)
	pod.Spec.PreemptionPolicy = ptr(corev1.PreemptLowerPriority)
	pod.Spec.Tolerations = []corev1.Toleration{
		{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
		{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
		{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}
	pod.Status.Phase = corev1.PodPending
	pod.Status.QOSClass = corev1.PodQOSBurstable
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/5000 nodes are available: waiting for the extender.", LastTransitionTime: pod.CreationTimestamp}}
	return pod
}

func ptr[T any](v T) *T { return &v }

// TestHTTPAnswersUnchanged pins the bytes of the extender's answers over
// HTTP (status, Content-Type and body), so that work on the handlers' speed
// cannot change what kube-scheduler reads. The bodies were recorded from the
// handlers as they were before that work; the large cases, over the 5,000
// nodes of BenchmarkHTTP5000, by their SHA-256.
func TestHTTPAnswersUnchanged(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	gpuList := &corev1.NodeList{Items: []corev1.Node{*fixture.MakeNode("n1").Obj(), *fixture.MakeNode("n2").Obj()}}
	for _, tt := range []struct {
		name, path string
		body       any // []byte, or encoded as JSON
		code       int
		want       string
	}{
		{"filter: a share, with failures and an unknown node", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("a").GPUMem(8).Obj(), NodeNames: names("n1", "n2", "n3", "n4", "ghost")}, 200, "{\"Nodes\":null,\"NodeNames\":[\"n2\",\"n4\"],\"FailedNodes\":{\"ghost\":\"gpupack: node is not in the extender's cache (deleted, or not yet seen)\",\"n1\":\"gpupack: largest free card has 6 GiB, container \\\"c0\\\" needs 8 GiB\",\"n3\":\"gpupack: no healthy card of an allowed model (pod allows any; node has 1 x Tesla T4 (unhealthy))\"},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
		{"filter: unresolvable everywhere", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("b").GPUMem(17).Obj(), NodeNames: names("n1", "n2")}, 200, "{\"Nodes\":null,\"NodeNames\":[],\"FailedNodes\":{},\"FailedAndUnresolvableNodes\":{\"n1\":\"gpupack: largest free card has 6 GiB, container \\\"c0\\\" needs 17 GiB\",\"n2\":\"gpupack: largest free card has 16 GiB, container \\\"c0\\\" needs 17 GiB\"},\"Error\":\"\"}\n"},
		{"filter: all fit", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("c").GPUMem(2).Obj(), NodeNames: names("n2", "n1", "n4")}, 200, "{\"Nodes\":null,\"NodeNames\":[\"n2\",\"n1\",\"n4\"],\"FailedNodes\":{},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
		{"filter: no GPU", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("d").Container("", "", "1").Obj(), NodeNames: names("n1", "ghost")}, 200, "{\"Nodes\":null,\"NodeNames\":[\"n1\",\"ghost\"],\"FailedNodes\":{},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
		{"filter: a request no node can serve", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("e").Container("1.5", "", "").Obj(), NodeNames: names("n1", "n2")}, 200, "{\"Nodes\":null,\"NodeNames\":[],\"FailedNodes\":{},\"FailedAndUnresolvableNodes\":{\"n1\":\"gpupack: container \\\"c0\\\" asks for 1500m aliyun.com/gpu-mem: must be a whole number\",\"n2\":\"gpupack: container \\\"c0\\\" asks for 1500m aliyun.com/gpu-mem: must be a whole number\"},\"Error\":\"\"}\n"},
		{"filter: empty node names", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("f").GPUMem(1).Obj(), NodeNames: &[]string{}}, 200, "{\"Nodes\":null,\"NodeNames\":[],\"FailedNodes\":{},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
		{"filter: full node list mode", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("g").GPUMem(8).Obj(), Nodes: gpuList}, 200, "{\"Nodes\":{\"metadata\":{},\"items\":[{\"metadata\":{\"name\":\"n2\",\"labels\":{\"gpushare\":\"true\"}},\"spec\":{},\"status\":{\"capacity\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"},\"allocatable\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"},\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"10.0.0.1\"}],\"daemonEndpoints\":{\"kubeletEndpoint\":{\"Port\":0}},\"nodeInfo\":{\"machineID\":\"\",\"systemUUID\":\"\",\"bootID\":\"\",\"kernelVersion\":\"\",\"osImage\":\"\",\"containerRuntimeVersion\":\"\",\"kubeletVersion\":\"\",\"kubeProxyVersion\":\"\",\"operatingSystem\":\"\",\"architecture\":\"\"}}}]},\"NodeNames\":null,\"FailedNodes\":{\"n1\":\"gpupack: largest free card has 6 GiB, container \\\"c0\\\" needs 8 GiB\"},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
		{"filter: full node list mode, all fit", filterPath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("g2").GPUMem(2).Obj(), Nodes: gpuList}, 200, "{\"Nodes\":{\"metadata\":{},\"items\":[{\"metadata\":{\"name\":\"n1\",\"labels\":{\"gpushare\":\"true\"}},\"spec\":{},\"status\":{\"capacity\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"},\"allocatable\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"},\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"10.0.0.1\"}],\"daemonEndpoints\":{\"kubeletEndpoint\":{\"Port\":0}},\"nodeInfo\":{\"machineID\":\"\",\"systemUUID\":\"\",\"bootID\":\"\",\"kernelVersion\":\"\",\"osImage\":\"\",\"containerRuntimeVersion\":\"\",\"kubeletVersion\":\"\",\"kubeProxyVersion\":\"\",\"operatingSystem\":\"\",\"architecture\":\"\"}}},{\"metadata\":{\"name\":\"n2\",\"labels\":{\"gpushare\":\"true\"}},\"spec\":{},\"status\":{\"capacity\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"},\"allocatable\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"},\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"10.0.0.1\"}],\"daemonEndpoints\":{\"kubeletEndpoint\":{\"Port\":0}},\"nodeInfo\":{\"machineID\":\"\",\"systemUUID\":\"\",\"bootID\":\"\",\"kernelVersion\":\"\",\"osImage\":\"\",\"containerRuntimeVersion\":\"\",\"kubeletVersion\":\"\",\"kubeProxyVersion\":\"\",\"operatingSystem\":\"\",\"architecture\":\"\"}}}]},\"NodeNames\":null,\"FailedNodes\":{},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
		{"filter: full node list mode, no items", filterPath,
			[]byte(`{"pod":{"metadata":{"name":"x","uid":"u"},"spec":{"containers":[{"name":"c","resources":{"limits":{"aliyun.com/gpu-mem":"1"}}}]}},"nodes":{"metadata":{}}}`), 200, "{\"Nodes\":{\"metadata\":{},\"items\":[]},\"NodeNames\":null,\"FailedNodes\":{},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
		{"prioritize", prioritizePath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("h").GPUMem(4).Obj(), NodeNames: names("n1", "n2", "n3", "n4", "ghost")}, 200, "[{\"Host\":\"n1\",\"Score\":10},{\"Host\":\"n2\",\"Score\":0},{\"Host\":\"n3\",\"Score\":0},{\"Host\":\"n4\",\"Score\":0},{\"Host\":\"ghost\",\"Score\":0}]\n"},
		{"prioritize: no GPU", prioritizePath,
			extenderv1.ExtenderArgs{Pod: fixture.MakePod().Name("i").Container("", "", "1").Obj(), NodeNames: names("n1", "n2")}, 200, "[{\"Host\":\"n1\",\"Score\":0},{\"Host\":\"n2\",\"Score\":0}]\n"},
		{"malformed", filterPath, []byte(`{"pod":`), 400, "{\"error\":\"bad request: body is not a valid request: unexpected EOF\"}\n"},
		{"trailing data", filterPath, []byte(`{} {}`), 400, "{\"error\":\"bad request: trailing data after the request\"}\n"},
		{"trailing bracket", filterPath, []byte(`{"nodenames":["n1"]}]`), 400, "{\"error\":\"bad request: no pod\"}\n"},
		{"trailing space", prioritizePath, []byte("{\"pod\":{\"metadata\":{\"name\":\"x\",\"uid\":\"u\"}},\"nodenames\":[\"n1\"]} \n"), 200, "[{\"Host\":\"n1\",\"Score\":0}]\n"},
		{"a field in another case", prioritizePath, []byte(`{"Pod":{"metadata":{"name":"x","uid":"u"}},"NodeNames":["n2"]}`), 200, "[{\"Host\":\"n2\",\"Score\":0}]\n"},
		{"a bad quantity", filterPath, []byte(`{"pod":{"metadata":{"name":"x","uid":"u"},"spec":{"containers":[{"name":"c","resources":{"limits":{"aliyun.com/gpu-mem":"x"}}}]}},"nodenames":["n1"]}`), 400, "{\"error\":\"bad request: body is not a valid request: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'\"}\n"},
		{"html in a name", filterPath, []byte(`{"pod":{"metadata":{"name":"x","uid":"u"},"spec":{"containers":[{"name":"c","resources":{"limits":{"aliyun.com/gpu-mem":"1"}}}]}},"nodenames":["<n&1>","n2"]}`), 200, "{\"Nodes\":null,\"NodeNames\":[\"n2\"],\"FailedNodes\":{\"\\u003cn\\u00261\\u003e\":\"gpupack: node is not in the extender's cache (deleted, or not yet seen)\"},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, ctype, body := rawPost(t, e.http.URL+tt.path, tt.body)
			if code != tt.code || ctype != "application/json" || body != tt.want {
				t.Errorf("got %d %s\n%s\nwant %d application/json\n%s", code, ctype, body, tt.code, tt.want)
			}
		})
	}
}

// rawPost sends body ([]byte, or v encoded as JSON) and returns the
// answer's status, Content-Type and body.
func rawPost(t testing.TB, url string, v any) (int, string, string) {
	t.Helper()
	body, ok := v.([]byte)
	if !ok {
		var err error
		if body, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(out)
}

// TestHTTPAnswersUnchanged5000 pins, by SHA-256, the answers over the 5,000
// nodes of BenchmarkHTTP5000: a filter that passes every node, one that
// fails some (79 GiB: only a card with at most 1 GiB used has room), one
// that fails all (a model no node has), and the prioritize after each,
// under both policies that the benchmark measures.
func TestHTTPAnswersUnchanged5000(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 5,000-node cache")
	}
	want := map[string]string{
		"binpack/20GiB":    "5000 passed, 0 failed: filter 396a97f4051ebd49a238c005b62a0a51cbbd364cee0142560ac165e27b8cc26c, prioritize 89d946c0d07f583c4ea9d30de50dad50a870a84df74e8a4813cda9beceb8bb14",
		"binpack/79GiB":    "4981 passed, 19 failed: filter 851d2af25a2b928cdd7422f219aed3ce9d9af6bd9420e738ff91030e660ddae5, prioritize 8a123c15cda98dda8f753c628fb33952904f03f1dcc87b4ed2068d34c3939cd2",
		"binpack/8GiBH100": "0 passed, 5000 failed: filter 448a08e49b250f7667ee7fc33ef80f57fdbc97af0c46a4a1a3921c3b9bed0604, prioritize 37517e5f3dc66819f61f5a7bb8ace1921282415f10551d2defa5c3eb0985b570",
		"fgd/20GiB":        "5000 passed, 0 failed: filter 396a97f4051ebd49a238c005b62a0a51cbbd364cee0142560ac165e27b8cc26c, prioritize 8a0fb00a5c6093f8c58a5008c5eb382fc2303be890f4106d38ab62ea4c652820",
		"fgd/79GiB":        "4981 passed, 19 failed: filter 851d2af25a2b928cdd7422f219aed3ce9d9af6bd9420e738ff91030e660ddae5, prioritize 154d97f293fe661866448d187aa29baf80bc77313cb55e790a5ad585dbd5a6d3",
		"fgd/8GiBH100":     "0 passed, 5000 failed: filter 448a08e49b250f7667ee7fc33ef80f57fdbc97af0c46a4a1a3921c3b9bed0604, prioritize 37517e5f3dc66819f61f5a7bb8ace1921282415f10551d2defa5c3eb0985b570",
	}
	for _, pol := range []string{"binpack", "fgd"} {
		srv, nodes := cluster5000(t, pol)
		ts := httptest.NewServer(srv.Handler())
		for _, c := range []struct {
			gib   int64
			model string
		}{{20, ""}, {79, ""}, {8, "H100"}} {
			gib := c.gib
			pod := fullPod(fmt.Sprintf("pin-%d%s", gib, c.model), 1500, 20)
			if c.model != "" {
				pod.Annotations[contract.AnnotationModels] = c.model
			}
			pod.Spec.Containers[0].Resources.Limits["aliyun.com/gpu-mem"] = *resource.NewQuantity(gib, resource.DecimalSI)
			pod.Spec.Containers[0].Resources.Requests["aliyun.com/gpu-mem"] = *resource.NewQuantity(gib, resource.DecimalSI)
			args := extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes}
			code, _, filtered := rawPost(t, ts.URL+filterPath, args)
			if code != http.StatusOK {
				t.Fatalf("filter: %d %s", code, filtered)
			}
			var fr extenderv1.ExtenderFilterResult
			if err := json.Unmarshal([]byte(filtered), &fr); err != nil {
				t.Fatal(err)
			}
			args.NodeNames = fr.NodeNames
			code, _, scores := rawPost(t, ts.URL+prioritizePath, args)
			if code != http.StatusOK {
				t.Fatalf("prioritize: %d %s", code, scores)
			}
			key := fmt.Sprintf("%s/%dGiB%s", pol, gib, c.model)
			got := fmt.Sprintf("%d passed, %d failed: filter %x, prioritize %x", len(*fr.NodeNames), len(fr.FailedNodes)+len(fr.FailedAndUnresolvableNodes), sha256.Sum256([]byte(filtered)), sha256.Sum256([]byte(scores)))
			if got != want[key] {
				t.Errorf("%s: got %q, want %q", key, got, want[key])
			}
		}
		ts.Close()
	}
}

// BenchmarkFilterAnswerJSON measures writing filter's answer on a busy
// cluster (5,000 nodes, 4,500 failed, 300 distinct reasons, as on the
// trace at 100% arrived): by encoding/json from the answer's maps, and as
// the handler writes it (writeFilterAnswer).
func BenchmarkFilterAnswerJSON(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	names := make([]string, 5000)
	reasons := make([]*miss, 300)
	for i := range reasons {
		reasons[i] = newMiss(nil, fmt.Sprintf("gpupack: largest free card has %d MiB, container \"c0\" needs 500 MiB", i))
	}
	for i, j := range rng.Perm(len(names)) {
		names[i] = fmt.Sprintf("gpu-node-%04d.cluster.example.com", j)
	}
	a := &filterAnswer{res: &extenderv1.ExtenderFilterResult{}, names: names}
	var fit []string
	for i := range names {
		if i%10 == 0 {
			fit = append(fit, names[i])
		} else {
			a.failed = append(a.failed, i)
		}
	}
	a.res.NodeNames = &fit
	a.why = func(i int) (*miss, bool) { return reasons[i%len(reasons)], i%7 == 0 }
	b.Run("encoding-json", func(b *testing.B) {
		for range b.N {
			if err := json.NewEncoder(io.Discard).Encode(a.result()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("writer", func(b *testing.B) {
		for range b.N {
			if err := writeFilterAnswer(io.Discard, a); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeArgs5000 reads a filter request of a full pod and 5,000
// node names the cache knows: as encoding/json reads an ExtenderArgs, and
// as filter reads it (decodeArgs).
func BenchmarkDecodeArgs5000(b *testing.B) {
	srv, names := cluster5000(b, "binpack")
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: fullPod("bench", 1000, 20), NodeNames: &names})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		decode func(r *http.Request) error
	}{
		{"encoding-json", func(r *http.Request) error { var a extenderv1.ExtenderArgs; return decode(r, &a) }},
		{"decodeArgs", func(r *http.Request) error { _, err := srv.decodeArgs(r); return err }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tc.decode(httptest.NewRequest(http.MethodPost, filterPath, bytes.NewReader(body))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
