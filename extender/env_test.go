package extender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/extender/policy"
)

var testKey = []byte("test-signing-key-0123456789")

// env is an extender served over real HTTP against a fake clientset.
type env struct {
	t      testing.TB
	ctx    context.Context
	client *fake.Clientset
	cache  *cache.Cache
	srv    *Server
	http   *httptest.Server
	// failBind makes the next Binding fail.
	failBind bool
}

func newEnv(t testing.TB, pol string, objs ...runtime.Object) *env {
	return newEnvWith(t, &config.Config{Policy: pol}, objs...)
}

func newEnvWith(t testing.TB, cfg *config.Config, objs ...runtime.Object) *env {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	e := &env{t: t, ctx: ctx, client: fake.NewClientset(objs...)}
	e.client.PrependReactor("create", "pods", e.bindReactor)
	config.SetDefaults(cfg)
	unit, _ := contract.ParseUnit(cfg.MemoryUnit)
	pol, err := policy.Get(policy.Name(cfg.Policy))
	if err != nil {
		t.Fatal(err)
	}
	e.cache = cache.New(cache.Options{Unit: unit, SigningKey: testKey, Policy: pol, WorkloadCoverage: cfg.WorkloadCoverage})
	factory := informers.NewSharedInformerFactory(e.client, 0)
	synced, err := e.cache.Watch(factory)
	if err != nil {
		t.Fatal(err)
	}
	lister := factory.Core().V1().Pods().Lister()
	factory.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		t.Fatal("informers did not sync")
	}
	e.srv, err = NewServer(cfg, Deps{Client: e.client, Pods: lister, Cache: e.cache, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.http.Close)
	return e
}

// bindReactor makes pods/binding set spec.nodeName and merge the Binding's
// annotations into the pod's in one write, as the API server does
// (BindingREST.setPodNodeAndMetadata in pkg/registry/core/pod/storage).
func (e *env) bindReactor(action k8stesting.Action) (bool, runtime.Object, error) {
	if action.GetSubresource() != "binding" {
		return false, nil, nil
	}
	if e.failBind {
		e.failBind = false
		return true, nil, apierrors.NewInternalError(fmt.Errorf("injected failure"))
	}
	b := action.(k8stesting.CreateAction).GetObject().(*corev1.Binding)
	obj, err := e.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), b.Namespace, b.Name)
	if err != nil {
		return true, nil, err
	}
	pod := obj.(*corev1.Pod).DeepCopy()
	if b.UID != "" && b.UID != pod.UID {
		return true, nil, apierrors.NewConflict(corev1.Resource("pods"), b.Name, fmt.Errorf("uid mismatch"))
	}
	if pod.Spec.NodeName != "" {
		return true, nil, apierrors.NewConflict(corev1.Resource("pods"), b.Name, fmt.Errorf("pod %s is already assigned to node %q", b.Name, pod.Spec.NodeName))
	}
	pod.Spec.NodeName = b.Target.Name
	if len(b.Annotations) > 0 && pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	for k, v := range b.Annotations {
		pod.Annotations[k] = v
	}
	return true, nil, e.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), pod, b.Namespace)
}

// post sends v as JSON and decodes the answer into out; it returns the status.
func (e *env) post(path string, v any, out any) int {
	e.t.Helper()
	var body []byte
	switch b := v.(type) {
	case []byte:
		body = b
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	resp, err := http.Post(e.http.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("decoding %s: %v", data, err)
		}
	}
	return resp.StatusCode
}

func (e *env) get(path string) (int, []byte) {
	e.t.Helper()
	resp, err := http.Get(e.http.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (e *env) pod(ns, name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.client.CoreV1().Pods(ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// create adds a pod through the API and waits until the cache saw it.
func (e *env) create(p *corev1.Pod) *corev1.Pod {
	e.t.Helper()
	p, err := e.client.CoreV1().Pods(p.Namespace).Create(e.ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.eventually("the pod lister sees "+p.Name, func() bool {
		_, err := e.srv.pods.Pods(p.Namespace).Get(p.Name)
		return err == nil
	})
	return p
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// httptestRecorder serves one request in memory and returns its status.
func httptestRecorder(h http.Handler, method, path, body string) int {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec.Code
}
