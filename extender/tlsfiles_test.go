package extender

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpupack/gpupack/extender/config"
)

// TestTLSFilesReload rotates the serving certificate and the client CA
// under a running extender, over real TLS: each connection after a
// rotation gets the new ones, and a rotation caught half-written keeps the
// last good ones.
func TestTLSFilesReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	ca1, ca1Key := newCA(t)
	ca2, ca2Key := newCA(t)
	// step moves the files' modification time on, as a rotation does
	// (a test writes faster than some filesystems' clock ticks).
	step := time.Now()
	touch := func(paths ...string) {
		step = step.Add(time.Second)
		for _, p := range paths {
			if err := os.Chtimes(p, step, step); err != nil {
				t.Fatal(err)
			}
		}
	}
	serve := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string) {
		c, k := newLeaf(t, ca, caKey, cn, x509.ExtKeyUsageServerAuth)
		writePEM(t, certFile, "CERTIFICATE", c.Raw)
		writeKey(t, keyFile, k)
		touch(certFile, keyFile)
	}
	trustClients := func(ca *x509.Certificate) {
		writePEM(t, caFile, "CERTIFICATE", ca.Raw)
		touch(caFile)
	}
	serve(ca1, ca1Key, "first")
	trustClients(ca1)

	cfg := &config.Config{Policy: "binpack", TLS: &config.TLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}}
	addr := serveExtender(t, cfg)

	roots := x509.NewCertPool()
	roots.AddCert(ca1)
	roots.AddCert(ca2)
	clientOf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey) []tls.Certificate {
		c, k := newLeaf(t, ca, caKey, "kube-scheduler", x509.ExtKeyUsageClientAuth)
		return []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: k}}
	}
	fromCA1, fromCA2 := clientOf(ca1, ca1Key), clientOf(ca2, ca2Key)
	// call binds over a new connection with a client certificate; it
	// returns the name the server's certificate gave, and the status.
	call := func(certs []tls.Certificate) (served string, status int, err error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Post("https://"+addr+bindPath, "application/json",
			strings.NewReader(`{"podName":"nobody","podNamespace":"default","node":"n1"}`))
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName, resp.StatusCode, nil
	}
	check := func(step string, certs []tls.Certificate, wantServed string, wantStatus int) {
		t.Helper()
		served, status, err := call(certs)
		switch {
		case wantStatus == 0 && err == nil:
			t.Errorf("%s: the handshake succeeded (served %q, status %d), want it refused", step, served, status)
		case wantStatus != 0 && err != nil:
			t.Errorf("%s: %v", step, err)
		case wantStatus != 0 && (served != wantServed || status != wantStatus):
			t.Errorf("%s: served %q, status %d; want %q, %d", step, served, status, wantServed, wantStatus)
		}
	}

	check("at start", fromCA1, "first", http.StatusOK)
	check("at start, a client of another CA", fromCA2, "", 0)

	serve(ca2, ca2Key, "second")
	check("the serving certificate rotated", fromCA1, "second", http.StatusOK)

	trustClients(ca2)
	check("the client CA rotated: the new CA's client", fromCA2, "second", http.StatusOK)
	check("the client CA rotated: the old CA's client", fromCA1, "", 0)

	// A key that is not the certificate's, as between the two writes of a
	// rotation: the last good pair is still served.
	_, otherKey := newLeaf(t, ca1, ca1Key, "x", x509.ExtKeyUsageServerAuth)
	writeKey(t, keyFile, otherKey)
	touch(keyFile)
	check("a half-written rotation", fromCA2, "second", http.StatusOK)
	serve(ca1, ca1Key, "third")
	check("the rotation completed", fromCA2, "third", http.StatusOK)
}
