package cluster

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controlPlane is etcd and kube-apiserver on loopback.
type controlPlane struct {
	dir        string
	pki        *pki
	etcd       *process
	apiserver  *process
	url        string
	kubeconfig string
	rest       *rest.Config
}

// startControlPlane starts etcd, then kube-apiserver with TLS, client
// certificate authentication and RBAC, and writes an admin kubeconfig.
func startControlPlane(ctx context.Context, b Binaries, dir string) (*controlPlane, error) {
	cp := &controlPlane{dir: dir}
	var err error
	if cp.pki, err = newPKI(filepath.Join(dir, "pki")); err != nil {
		return nil, fmt.Errorf("making certificates: %w", err)
	}
	client, err := freePort()
	if err != nil {
		return nil, err
	}
	peer, err := freePort()
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	cp.etcd, err = start(dir, "etcd", b.Etcd, []string{
		"--name=gpupack", "--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=gpupack=" + peerURL, "--unsafe-no-fsync", "--log-level=warn",
	})
	if err != nil {
		return nil, err
	}
	if err := poll(ctx, "etcd to serve", 30*time.Second, cp.etcd, func() bool {
		resp, err := http.Get(etcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		cp.stop()
		return nil, err
	}

	port, err := freePort()
	if err != nil {
		cp.stop()
		return nil, err
	}
	p := cp.pki
	cp.apiserver, err = start(dir, "kube-apiserver", b.APIServer, []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "pki"),
		"--tls-cert-file=" + p.servingCert, "--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-key-file=" + p.saPub, "--service-account-signing-key-file=" + p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		// No controller-manager: nothing would mint service-account tokens
		// or lift condition taints.
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
		"--endpoint-reconciler-type=none",
		"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
	})
	if err != nil {
		cp.stop()
		return nil, err
	}
	cp.url = "https://127.0.0.1:" + strconv.Itoa(port)
	cp.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := cp.writeKubeconfig(); err != nil {
		cp.stop()
		return nil, err
	}
	if cp.rest, err = clientcmd.BuildConfigFromFlags("", cp.kubeconfig); err != nil {
		cp.stop()
		return nil, err
	}
	cp.rest.QPS, cp.rest.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(cp.rest)
	if err != nil {
		cp.stop()
		return nil, err
	}
	if err := poll(ctx, "kube-apiserver to be ready", 90*time.Second, cp.apiserver, func() bool {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	}); err != nil {
		cp.stop()
		return nil, err
	}
	return cp, nil
}

func (cp *controlPlane) writeKubeconfig() error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["gpupack"] = &clientcmdapi.Cluster{Server: cp.url, CertificateAuthorityData: cp.pki.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: cp.pki.adminCert, ClientKey: cp.pki.adminKey}
	cfg.Contexts["gpupack"] = &clientcmdapi.Context{Cluster: "gpupack", AuthInfo: "admin"}
	cfg.CurrentContext = "gpupack"
	return clientcmd.WriteToFile(*cfg, cp.kubeconfig)
}

// stop stops the API server before etcd.
func (cp *controlPlane) stop() {
	cp.apiserver.stop(15 * time.Second)
	cp.etcd.stop(10 * time.Second)
}
