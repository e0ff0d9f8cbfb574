package extender

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/extender/config"
)

// tlsFiles serves the extender's certificate and client CA from their
// files, and reads them again when they change (a Secret or cert-manager
// rotating them), so a rotation needs no restart.
//
// Each TLS handshake compares the files' sizes and modification times
// (following symlinks, so a Secret volume's swap of its ..data link counts)
// with those last loaded; if they differ, the files are loaded again. A
// change that does not load (a pair caught half-written, a CA file with no
// certificate) keeps what was served and is logged once; the next change
// is tried again. A stat per handshake is cheap next to the handshake, and
// kube-scheduler keeps its connections open.
type tlsFiles struct {
	t   config.TLS
	log klog.Logger

	mu    sync.Mutex
	stamp string      // the files as last looked at
	cur   *tls.Config // what is served
}

// newTLSFiles loads the files once: at start a file that does not load is
// an error.
func newTLSFiles(t *config.TLS, log klog.Logger) (*tlsFiles, error) {
	f := &tlsFiles{t: *t, log: log}
	stamp, err := f.stampNow()
	if err != nil {
		return nil, err
	}
	if f.cur, err = loadTLS(&f.t); err != nil {
		return nil, err
	}
	f.stamp = stamp
	return f, nil
}

// config is the listener's TLS configuration: each connection gets the
// files' current one.
func (f *tlsFiles) config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return f.current(), nil },
	}
}

// current returns what to serve, loading the files again if they changed.
func (f *tlsFiles) current() *tls.Config {
	stamp, err := f.stampNow()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil || stamp == f.stamp {
		return f.cur // a file missing for a moment: keep serving
	}
	f.stamp = stamp
	tc, err := loadTLS(&f.t)
	if err != nil {
		f.log.Error(err, "TLS files changed but do not load; still serving the previous ones", "certFile", f.t.CertFile, "clientCAFile", f.t.ClientCAFile)
		return f.cur
	}
	f.cur = tc
	f.log.Info("TLS files reloaded", "certFile", f.t.CertFile, "clientCAFile", f.t.ClientCAFile)
	return f.cur
}

// stampNow is the files' sizes and modification times.
func (f *tlsFiles) stampNow() (string, error) {
	var b strings.Builder
	for _, p := range []string{f.t.CertFile, f.t.KeyFile, f.t.ClientCAFile} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("TLS file: %w", err)
		}
		b.WriteString(strconv.FormatInt(fi.Size(), 10) + "@" + strconv.FormatInt(fi.ModTime().UnixNano(), 10) + " ")
	}
	return b.String(), nil
}

// loadTLS reads the serving certificate and, if set, the client CA: /bind
// then requires a client certificate it signed (see Server.verb); the other
// routes accept one but do not require it.
func loadTLS(t *config.TLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the serving certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s holds no PEM certificate", t.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}
