package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controlPlane is etcd and kube-apiserver (and, for real nodes,
// kube-controller-manager).
type controlPlane struct {
	dir        string
	pki        *pki
	etcd       *process
	apiserver  *process
	controller *process
	url        string
	kubeconfig string
	rest       *rest.Config
}

// controlPlaneOptions shape the control plane.
type controlPlaneOptions struct {
	// address is where kube-apiserver listens and what it advertises
	// (loopback when unset).
	address netip.Addr
	// realNodes: real kubelets and pods will use it. kube-apiserver then
	// admits service accounts, authorizes nodes (Node, NodeRestriction) and
	// reaches kubelets with a client certificate, and the kubernetes
	// service's endpoint is its address; without, none of that is needed
	// (nothing would mint service-account tokens or lift condition taints).
	realNodes bool
}

// startControlPlane starts etcd, then kube-apiserver with TLS, client
// certificate authentication and RBAC, and writes an admin kubeconfig.
func startControlPlane(ctx context.Context, b Binaries, dir string, o controlPlaneOptions) (*controlPlane, error) {
	cp := &controlPlane{dir: dir}
	if !o.address.IsValid() {
		o.address = netip.MustParseAddr("127.0.0.1")
	}
	var err error
	if cp.pki, err = newPKI(filepath.Join(dir, "pki"), net.IP(o.address.AsSlice())); err != nil {
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
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + o.address.String(), "--advertise-address=" + o.address.String(), "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "pki"),
		"--tls-cert-file=" + p.servingCert, "--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-key-file=" + p.saPub, "--service-account-signing-key-file=" + p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
	}
	if o.realNodes {
		cert, key, err := p.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
		if err != nil {
			cp.stop()
			return nil, err
		}
		args = append(args, "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
			"--kubelet-client-certificate="+cert, "--kubelet-client-key="+key,
			"--kubelet-preferred-address-types=InternalIP")
	} else {
		args = append(args, "--authorization-mode=RBAC",
			"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
			"--endpoint-reconciler-type=none")
	}
	if cp.apiserver, err = start(dir, "kube-apiserver", b.APIServer, args); err != nil {
		cp.stop()
		return nil, err
	}
	cp.url = "https://" + netip.AddrPortFrom(o.address, uint16(port)).String()
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
	return cp.writeClientKubeconfig(cp.kubeconfig, cp.pki.adminCert, cp.pki.adminKey)
}

// writeClientKubeconfig writes a kubeconfig at path for the client
// certificate cert.
func (cp *controlPlane) writeClientKubeconfig(path, cert, key string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["gpupack"] = &clientcmdapi.Cluster{Server: cp.url, CertificateAuthorityData: cp.pki.caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificate: cert, ClientKey: key}
	cfg.Contexts["gpupack"] = &clientcmdapi.Context{Cluster: "gpupack", AuthInfo: "user"}
	cfg.CurrentContext = "gpupack"
	return clientcmd.WriteToFile(*cfg, path)
}

// userKubeconfig issues a client certificate for user cn in groups and
// writes a kubeconfig for it under the control plane's folder.
func (cp *controlPlane) userKubeconfig(name, cn string, groups ...string) (string, error) {
	cert, key, err := cp.pki.client(name, cn, groups...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.dir, name+".kubeconfig")
	return path, cp.writeClientKubeconfig(path, cert, key)
}

// serviceCIDR holds the cluster's service addresses; the kubernetes
// service is its first.
const serviceCIDR = "10.0.0.0/24"

// startControllerManager runs kube-controller-manager: Deployments,
// DaemonSets and ReplicaSets make pods, service accounts and the cluster's
// CA reach pods, nodes' condition taints are lifted.
func (cp *controlPlane) startControllerManager(ctx context.Context, b Binaries) error {
	kc, err := cp.userKubeconfig("controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	cp.controller, err = start(cp.dir, "kube-controller-manager", b.ControllerManager, []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--leader-elect=false", "--use-service-account-credentials",
		"--service-account-private-key-file=" + cp.pki.saKey, "--root-ca-file=" + cp.pki.caCert,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--v=2",
	})
	if err != nil {
		return err
	}
	insecure := insecureClient()
	return poll(ctx, "kube-controller-manager to be healthy", 60*time.Second, cp.controller, func() bool {
		resp, err := insecure.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// stop stops the controllers and the API server before etcd.
func (cp *controlPlane) stop() {
	cp.controller.stop(10 * time.Second)
	cp.apiserver.stop(15 * time.Second)
	cp.etcd.stop(10 * time.Second)
}
