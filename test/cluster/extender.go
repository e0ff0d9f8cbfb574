package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
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
// file, so that a restarted extender trusts its earlier decisions.
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
	body := fmt.Sprintf("port: %d\naddress: 127.0.0.1\npolicy: %s\nsigningKeyFile: %s\nclientQPS: 500\nclientBurst: 1000\n", port, policy, key)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, err
	}
	return &extender{bin: bin, dir: dir, kubeconfig: kubeconfig, config: cfg, port: port}, nil
}

// URL is the extender's prefix, as kube-scheduler calls it.
func (e *extender) URL() string {
	return "http://127.0.0.1:" + strconv.Itoa(e.port) + "/gpushare-scheduler"
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
