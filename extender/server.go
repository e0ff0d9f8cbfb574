package extender

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/internal/version"
)

// Prefix is gpushare's URL prefix, which scheduler configurations name.
const Prefix = "/gpushare-scheduler"

// maxBody bounds a request body: a full node list of 5,000 nodes fits.
const maxBody = 256 << 20

// Server answers the extender API. Build it with NewServer.
type Server struct {
	cfg     *config.Config
	client  kubernetes.Interface
	pods    corelisters.PodLister
	cache   *cache.Cache
	policy  *policy.Policy
	unit    contract.Unit
	key     []byte
	ready   func() bool
	metrics *metrics
	memo    *memo
	results resultCache
	// measures are the nodes' measures that every request shape shares
	// (policy.Measures), under fill and FGD.
	measures measuresCache
	// requireClientCert makes /bind refuse callers without a verified
	// client certificate.
	requireClientCert bool
}

// Deps are what a Server reads and writes.
type Deps struct {
	Client kubernetes.Interface
	Pods   corelisters.PodLister
	Cache  *cache.Cache
	// Key signs decisions; it must be the cache's SigningKey.
	Key []byte
	// Ready reports whether the informers have synced.
	Ready func() bool
}

// NewServer checks the configuration (already defaulted) and builds a server.
func NewServer(cfg *config.Config, d Deps) (*Server, error) {
	if errs := config.Validate(cfg); len(errs) > 0 {
		return nil, fmt.Errorf("invalid extender configuration: %w", errs.ToAggregate())
	}
	p, err := policy.Get(policy.Name(cfg.Policy))
	if err != nil {
		return nil, err
	}
	unit, err := contract.ParseUnit(cfg.MemoryUnit)
	if err != nil {
		return nil, err
	}
	if len(d.Key) == 0 {
		return nil, errors.New("a signing key is required")
	}
	return &Server{
		cfg: cfg, client: d.Client, pods: d.Pods, cache: d.Cache, policy: p, unit: unit, key: d.Key,
		ready: d.Ready, metrics: newMetrics(d.Cache), memo: newMemo(time.Minute),
		requireClientCert: cfg.TLS != nil && cfg.TLS.ClientCAFile != "",
	}, nil
}

// MinSigningKeyBytes is the shortest signing key accepted: HMAC-SHA256
// (contract.Sign) wants a key at least as long as its 32-byte output
// (RFC 2104, section 3); a shorter one weakens every signature.
const MinSigningKeyBytes = 32

// SigningKey reads the key file (surrounding white space is not part of
// the key), or makes a random key of MinSigningKeyBytes when path is empty.
func SigningKey(path string) ([]byte, error) {
	if path == "" {
		k := make([]byte, MinSigningKeyBytes)
		_, err := rand.Read(k)
		return k, err
	}
	k, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	k = []byte(strings.TrimSpace(string(k)))
	if len(k) < MinSigningKeyBytes {
		return nil, fmt.Errorf("signing key %s has %d bytes; want at least %d (e.g. head -c 48 /dev/urandom | base64 > %s)", path, len(k), MinSigningKeyBytes, path)
	}
	return k, nil
}

// Handler is the extender's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+Prefix+"/filter", s.verb("filter", func(r *http.Request) (any, error) {
		args, err := s.decodeArgs(r)
		if err != nil {
			return nil, err
		}
		a, err := s.filter(r.Context(), args)
		if err != nil {
			return nil, err
		}
		return a, nil
	}))
	mux.Handle("POST "+Prefix+"/prioritize", s.verb("prioritize", func(r *http.Request) (any, error) {
		args, err := s.decodeArgs(r)
		if err != nil {
			return nil, err
		}
		return s.Prioritize(r.Context(), args)
	}))
	mux.Handle("POST "+Prefix+"/bind", s.verb("bind", func(r *http.Request) (any, error) {
		if s.requireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			return nil, errForbidden
		}
		var args extenderv1.ExtenderBindingArgs
		if err := decode(r, &args); err != nil {
			return nil, err
		}
		res := &extenderv1.ExtenderBindingResult{}
		if err := s.Bind(r.Context(), &args); err != nil {
			if errors.Is(err, errBadRequest) {
				return nil, err
			}
			res.Error = err.Error()
		}
		return res, nil
	}))
	mux.HandleFunc("GET "+Prefix+"/inspect", s.inspect)
	mux.HandleFunc("GET "+Prefix+"/inspect/{node}", s.inspect)
	s.probes(mux)
	return mux
}

// ProbeHandler serves only the read-only routes for probes and scrapes:
// /healthz, /readyz, /metrics and /version.
func (s *Server) ProbeHandler() http.Handler {
	mux := http.NewServeMux()
	s.probes(mux)
	return mux
}

func (s *Server) probes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.ready != nil && !s.ready() {
			http.Error(w, "informers have not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": version.Get(), "goVersion": runtime.Version(), "policy": string(s.policy.Name), "memoryUnit": string(s.unit)})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	if s.cfg.Profiling {
		// pprof.Index serves the named profiles (heap, goroutine, ...)
		// below it; these four it does not.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
}

var errForbidden = errors.New("forbidden: /bind requires a client certificate signed by the configured client CA")

// verb wraps an extender verb: timing, body limits, error mapping, JSON.
func (s *Server) verb(name string, fn func(*http.Request) (any, error)) http.Handler {
	hist := s.metrics.duration.WithLabelValues(name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		defer func() { hist.Observe(time.Since(start).Seconds()) }()
		if s.ready != nil && !s.ready() {
			// A partial view of the cluster could double-book a card.
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "extender is starting: informers have not synced"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		ctx := klog.NewContext(r.Context(), klog.FromContext(r.Context()).WithValues("verb", name))
		out, err := fn(r.WithContext(ctx))
		switch {
		case errors.Is(err, errForbidden):
			writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusOK, out)
		}
	})
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body is not a valid request: %v", errBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the request", errBadRequest)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if a, ok := v.(*filterAnswer); ok {
		_ = writeFilterAnswer(w, a)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// InspectResult is what /inspect answers.
type InspectResult struct {
	Unit  contract.Unit    `json:"unit"`
	Nodes []cache.NodeInfo `json:"nodes"`
}

func (s *Server) inspect(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("node")
	nodes := s.cache.Inspect(name)
	if name != "" && len(nodes) == 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "node " + name + " is not known to the extender"})
		return
	}
	if nodes == nil {
		nodes = []cache.NodeInfo{}
	}
	writeJSON(w, http.StatusOK, InspectResult{Unit: s.unit, Nodes: nodes})
}

// Serve runs the HTTP(S) server on l until ctx ends, then shuts it down.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	log := klog.FromContext(ctx)
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if t := s.cfg.TLS; t != nil {
		files, err := newTLSFiles(t, log)
		if err != nil {
			return err
		}
		srv.TLSConfig = files.config()
		l = tls.NewListener(l, srv.TLSConfig)
	}
	log.Info("Extender serving", "address", l.Addr().String(), "tls", s.cfg.TLS != nil, "policy", s.policy.Name, "unit", s.unit)
	return serveUntilDone(ctx, srv, l)
}

// serveUntilDone serves srv on l until it fails or ctx ends, then shuts it
// down gracefully (10 s at most).
func serveUntilDone(ctx context.Context, srv *http.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// ListenAndServe listens on the configured address and port, and on the
// probe address when one is set, until ctx ends or either server fails.
func (s *Server) ListenAndServe(ctx context.Context) error {
	l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.Address, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return err
	}
	if s.cfg.ProbeAddress == "" {
		return s.Serve(ctx, l)
	}
	pl, err := net.Listen("tcp", s.cfg.ProbeAddress)
	if err != nil {
		l.Close()
		return fmt.Errorf("probe address: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- s.Serve(ctx, l) }()
	go func() { errc <- s.ServeProbes(ctx, pl) }()
	first := <-errc
	cancel()
	if second := <-errc; first == nil {
		first = second
	}
	return first
}

// ServeProbes serves ProbeHandler over plain HTTP on l until ctx ends.
func (s *Server) ServeProbes(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.ProbeHandler(), ReadHeaderTimeout: 10 * time.Second}
	klog.FromContext(ctx).Info("Serving probes and metrics", "address", l.Addr().String())
	return serveUntilDone(ctx, srv, l)
}
