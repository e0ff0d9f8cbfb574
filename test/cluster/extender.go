package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// extender is our extender as a process of its own, so tests can kill it.
type extender struct {
	bin, dir, kubeconfig, config string
	port                         int
	proc                         *process
}

func insecureClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// newExtender configures the extender: a fixed port and a signing key
// file, so that a restarted extender trusts its earlier decisions; filter
// answers the best nodes only, as the chart configures it for a profile
// whose only scores are the extender's (schedulerConfig's); and Go's
// profiles served, for a benchmark to read where its CPU goes (the port
// is on loopback).
func newExtender(bin, dir, kubeconfig, policy string) (*extender, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	key := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(key, []byte("gpupack local cluster signing key\n"), 0o600); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "extender.yaml")
	body := fmt.Sprintf("port: %d\naddress: 127.0.0.1\npolicy: %s\nsigningKeyFile: %s\nclientQPS: 500\nclientBurst: 1000\nfilterKeeps: best\nprofiling: true\n", port, policy, key)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, err
	}
	return &extender{bin: bin, dir: dir, kubeconfig: kubeconfig, config: cfg, port: port}, nil
}

// URL is the extender's prefix, as kube-scheduler calls it.
func (e *extender) URL() string {
	return "http://127.0.0.1:" + strconv.Itoa(e.port) + "/gpushare-scheduler"
}

// profileURL is the extender's CPU profile over the next seconds.
func (e *extender) profileURL(seconds int) string {
	return "http://127.0.0.1:" + strconv.Itoa(e.port) + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds)
}

// metricsURL is the extender's Prometheus exposition.
func (e *extender) metricsURL() string {
	return "http://127.0.0.1:" + strconv.Itoa(e.port) + "/metrics"
}

// proxy serves wrap(a reverse proxy to the extender) on a loopback port of
// this process, so that a test sees each extender call as kube-scheduler
// makes it. It returns the extender prefix through the proxy and the
// server, which the caller shuts down. The proxy forwards to the extender's
// fixed port, so it outlives a restart of the extender.
func (e *extender) proxy(wrap func(http.Handler) http.Handler) (string, *http.Server, error) {
	target := &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(e.port)}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// kube-scheduler binds in goroutines of their own: keep a connection
	// per concurrent call rather than dialling anew.
	transport.MaxIdleConnsPerHost = 100
	// What goes wrong on the way (kube-scheduler hanging up early, say)
	// goes to the proxy's log beside the others.
	f, err := os.OpenFile(filepath.Join(e.dir, "extender-proxy.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", nil, err
	}
	errs := log.New(f, "", log.LstdFlags|log.Lmicroseconds)
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: transport,
		ErrorLog:  errs,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Close()
		return "", nil, err
	}
	srv := &http.Server{Handler: wrap(rp), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errs}
	srv.RegisterOnShutdown(func() { f.Close() })
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String() + "/gpushare-scheduler", srv, nil
}

// start runs the extender and waits until it is ready (informers synced).
func (e *extender) start(ctx context.Context) error {
	p, err := start(e.dir, "gpupack-extender", e.bin, []string{"--kubeconfig=" + e.kubeconfig, "--config=" + e.config, "--v=2"})
	if err != nil {
		return err
	}
	e.proc = p
	return poll(ctx, "the extender to be ready", 30*time.Second, p, func() bool {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(e.port) + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}
