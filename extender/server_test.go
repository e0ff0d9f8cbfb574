package extender

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/internal/fixture"
)

func TestInspectAndMetrics(t *testing.T) {
	e := newEnv(t, "binpack", cluster()...)
	pod := e.create(fixture.MakePod().Name("a").GPUMem(8).Obj())
	if _, errMsg := e.schedule(pod, "n1", "n2"); errMsg != "" {
		t.Fatal(errMsg)
	}
	code, body := e.get(Prefix + "/inspect/n2")
	var res InspectResult
	if err := json.Unmarshal(body, &res); err != nil || code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	n := res.Nodes[0]
	if res.Unit != "GiB" || n.Name != "n2" || n.Total != 32 || n.Allocated != 8 || len(n.Cards[0].Pods) != 1 || n.Cards[0].Pods[0].Name != "a" || n.Cards[0].UUID != "GPU-n2-0" {
		t.Errorf("inspect n2: %s", body)
	}
	if code, _ := e.get(Prefix + "/inspect/nope"); code != http.StatusNotFound {
		t.Errorf("inspect of an unknown node: %d", code)
	}
	if code, body := e.get(Prefix + "/inspect"); code != http.StatusOK || !strings.Contains(string(body), `"n4"`) {
		t.Errorf("inspect all: %d", code)
	}
	// Answers: a's filter rated n1 and n2, its prioritize (of n2 alone)
	// kept n2's. Another pod of the shape, filtered on n1 (unchanged:
	// kept) and n2 (its card changed when a bound: rated again).
	var fr extenderv1.ExtenderFilterResult
	if code := e.post(filterPath, extenderv1.ExtenderArgs{Pod: e.create(fixture.MakePod().Name("b").GPUMem(8).Obj()), NodeNames: names("n1", "n2")}, &fr); code != http.StatusOK {
		t.Fatalf("filter: %d", code)
	}
	// Two rejections: n1 has 6 GiB free, the pods want 8.
	_, metrics := e.get("/metrics")
	for _, want := range []string{
		`gpupack_extender_node_answers_total{source="rated"} 3`,
		`gpupack_extender_node_answers_total{source="kept"} 2`,
		`gpupack_extender_request_duration_seconds_count{verb="bind"} 1`,
		`gpupack_extender_filter_rejections_total{reason="share"} 2`,
		`gpupack_extender_binds_total{result="bound"} 1`,
		`gpupack_extender_card_memory_allocated_bytes{UUID="GPU-n2-0",device="nvidia0",gpu="0",hostname="n2",index="0",model="Tesla T4",modelName="Tesla T4",node="n2",uuid="GPU-n2-0"} 8.589934592e+09`,
		`gpupack_extender_card_memory_total_bytes{UUID="",device="nvidia1",gpu="1",hostname="n4",index="1",model="",modelName="",node="n4",uuid=""} 1.7179869184e+10`,
		`gpupack_extender_card_healthy{UUID="GPU-n3-0",device="nvidia0",gpu="0",hostname="n3",index="0",model="Tesla T4",modelName="Tesla T4",node="n3",uuid="GPU-n3-0"} 0`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if code, body := e.get("/version"); code != http.StatusOK || !strings.Contains(string(body), `"policy":"binpack"`) {
		t.Errorf("version: %d %s", code, body)
	}
	if code, _ := e.get("/healthz"); code != http.StatusOK {
		t.Errorf("healthz %d", code)
	}
	if code, _ := e.get("/readyz"); code != http.StatusOK {
		t.Errorf("readyz %d", code)
	}
}

func TestNotReady(t *testing.T) {
	c := cache.New(cache.Options{Unit: "GiB", SigningKey: testKey})
	client := fake.NewClientset()
	cfg := config.Default()
	srv, err := NewServer(cfg, Deps{Client: client, Pods: informers.NewSharedInformerFactory(client, 0).Core().V1().Pods().Lister(), Cache: c, Key: testKey, Ready: func() bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} {
		rec := httptestRecorder(h, http.MethodGet, path, "")
		if rec != want {
			t.Errorf("%s: %d, want %d", path, rec, want)
		}
	}
	if code := httptestRecorder(h, http.MethodPost, filterPath, `{}`); code != http.StatusServiceUnavailable {
		t.Errorf("filter before sync: %d, want 503", code)
	}
}

// TestProbeAddress: with the verbs on loopback, the probe address serves
// health, readiness, metrics and version, and nothing that changes state.
func TestProbeAddress(t *testing.T) {
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	c := cache.New(cache.Options{Unit: "GiB", SigningKey: testKey})
	client := fake.NewClientset()
	cfg := config.Default()
	cfg.Address, cfg.Port, cfg.ProbeAddress = "127.0.0.1", free(), fmt.Sprintf("127.0.0.1:%d", free())
	srv, err := NewServer(cfg, Deps{Client: client, Pods: informers.NewSharedInformerFactory(client, 0).Core().V1().Pods().Lister(), Cache: c, Key: testKey, Ready: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx) }()
	probe := "http://" + cfg.ProbeAddress
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodGet, "/readyz", http.StatusOK},
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodGet, "/version", http.StatusOK},
		{http.MethodPost, filterPath, http.StatusNotFound},
		{http.MethodPost, Prefix + "/bind", http.StatusNotFound},
		{http.MethodGet, Prefix + "/inspect", http.StatusNotFound},
	}
	for _, tt := range tests {
		var resp *http.Response
		deadline := time.Now().Add(10 * time.Second)
		for {
			req, _ := http.NewRequestWithContext(ctx, tt.method, probe+tt.path, strings.NewReader("{}"))
			if resp, err = http.DefaultClient.Do(req); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond) // the listener may not be up yet
		}
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s on the probe address: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
}

// TestProfiling: Go's profiles are served where /metrics is, and only when
// profiling is on.
func TestProfiling(t *testing.T) {
	for _, on := range []bool{false, true} {
		c := cache.New(cache.Options{Unit: "GiB", SigningKey: testKey})
		client := fake.NewClientset()
		cfg := config.Default()
		cfg.Profiling = on
		srv, err := NewServer(cfg, Deps{Client: client, Pods: informers.NewSharedInformerFactory(client, 0).Core().V1().Pods().Lister(), Cache: c, Key: testKey, Ready: func() bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		for name, h := range map[string]http.Handler{"the extender's port": srv.Handler(), "the probe address": srv.ProbeHandler()} {
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline", "/debug/pprof/symbol"} {
				if code := httptestRecorder(h, http.MethodGet, path, ""); code != want {
					t.Errorf("profiling %v: GET %s on %s: %d, want %d", on, path, name, code, want)
				}
			}
		}
	}
}

func TestNewServerRejectsBadConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Policy = "tetris"
	if _, err := NewServer(cfg, Deps{Key: testKey}); err == nil || !strings.Contains(err.Error(), `"tetris"`) {
		t.Errorf("err = %v", err)
	}
}

// TestTLSClientCertForBind serves HTTPS with a client CA: /bind refuses a
// caller without a certificate and accepts kube-scheduler's.
func TestTLSClientCertForBind(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.Raw)
	srvCert, srvKey := newLeaf(t, ca, caKey, "gpupack-extender", x509.ExtKeyUsageServerAuth)
	writePEM(t, filepath.Join(dir, "tls.crt"), "CERTIFICATE", srvCert.Raw)
	writeKey(t, filepath.Join(dir, "tls.key"), srvKey)
	cliCert, cliKey := newLeaf(t, ca, caKey, "kube-scheduler", x509.ExtKeyUsageClientAuth)

	cfg := &config.Config{Policy: "binpack", TLS: &config.TLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), ClientCAFile: filepath.Join(dir, "ca.crt")}}
	addr := serveExtender(t, cfg)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	url := "https://" + addr
	body := `{"podName":"nobody","podNamespace":"default","node":"n1"}`
	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	scheduler := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}}}}}
	for _, tt := range []struct {
		name   string
		client *http.Client
		path   string
		want   int
	}{
		{"bind without a client certificate", anonymous, bindPath, http.StatusForbidden},
		{"bind with the scheduler's certificate", scheduler, bindPath, http.StatusOK},
		{"filter needs no client certificate", anonymous, filterPath, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := body
			if tt.path == filterPath {
				b = `{"pod":{"metadata":{"name":"x","uid":"u"}},"nodenames":["n1"]}`
			}
			resp, err := tt.client.Post(url+tt.path, "application/json", strings.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == http.StatusOK && tt.path == bindPath {
				var br extenderv1.ExtenderBindingResult
				_ = json.NewDecoder(resp.Body).Decode(&br)
				if br.Error != "pod default/nobody does not exist" {
					t.Errorf("bind error %q", br.Error)
				}
			}
		})
	}
}

// serveExtender runs an extender of cfg on a loopback port until the test ends,
// and returns its address.
func serveExtender(t *testing.T, cfg *config.Config) string {
	t.Helper()
	e := newEnvWith(t, cfg, cluster()...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

func newLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}

func TestSigningKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file string
		wantLen    int // 0: rejected
	}{
		{"16 bytes, once accepted", strings.Repeat("k", 16), 0},
		{"31 bytes", strings.Repeat("k", 31), 0},
		{"32 bytes", strings.Repeat("k", 32), 32},
		// the newline that echo and kubectl create secret leave is not key
		{"32 bytes and a newline", strings.Repeat("k", 32) + "\n", 32},
		{"31 bytes padded to 33 with white space", " " + strings.Repeat("k", 31) + "\n", 0},
		{"64 bytes", strings.Repeat("k", 64), 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := SigningKey(path)
			switch {
			case tc.wantLen == 0 && err == nil:
				t.Fatalf("a %d-byte key was accepted; want at least %d", len(k), MinSigningKeyBytes)
			case tc.wantLen == 0 && !strings.Contains(err.Error(), "want at least 32"):
				t.Fatalf("error %q does not say what is accepted", err)
			case tc.wantLen != 0 && err != nil:
				t.Fatal(err)
			case len(k) != tc.wantLen && tc.wantLen != 0:
				t.Fatalf("key has %d bytes, want %d", len(k), tc.wantLen)
			}
		})
	}
	if k, err := SigningKey(""); err != nil || len(k) != MinSigningKeyBytes {
		t.Fatalf("random key: %d bytes, %v; want %d", len(k), err, MinSigningKeyBytes)
	}
	if _, err := SigningKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing key file was accepted")
	}
}
