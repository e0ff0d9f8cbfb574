package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// RealNodeSpec is a node run as a machine runs one: the kubelet built from
// the pinned Kubernetes module, containerd and runc from the machine
// (Debian's packages), kube-proxy, pods in real containers from images
// imported into its containerd. Each real node has network and mount
// namespaces of its own (its /run, /var/lib and /var/log are folders of
// its own, so /var/lib/kubelet/device-plugins is its own) and a cgroup of
// its own; see host.go for what it changes on the machine.
type RealNodeSpec struct {
	Name   string
	Labels map[string]string
}

// RealNode is a running real node.
type RealNode struct {
	Name string
	IP   netip.Addr
	// Dir holds its files: root/ is its /run, /var/lib and /var/log, and
	// the logs of its kubelet, containerd and kube-proxy.
	Dir string
	// Cgroup is its cgroup (under every hierarchy's root): its kubelet's
	// cgroupRoot, and system/ holds its kubelet, containerd and kube-proxy.
	Cgroup string

	holder, containerd, kubelet, proxy *process
	kubeletBin                         string
	kubeletArgs                        []string
	client                             kubernetes.Interface
}

// Root is path as the node sees it (for example /var/lib/kubelet/...),
// seen from this machine.
func (n *RealNode) Root(path string) string {
	for _, top := range []string{"/run", "/var/lib", "/var/log"} {
		if path == top || strings.HasPrefix(path, top+"/") {
			return filepath.Join(n.Dir, "root", path)
		}
	}
	return path
}

// PodResourcesSocket is the kubelet's PodResources API, seen from here.
func (n *RealNode) PodResourcesSocket() string {
	return n.Root("/var/lib/kubelet/pod-resources/kubelet.sock")
}

// ContainerPIDs lists the processes of a container (containerd's id) of
// the pod with uid, from its cgroup under the node's (kubepods, the pod's
// cgroup, the container's).
func (n *RealNode) ContainerPIDs(uid, id string) []int {
	for _, root := range cgroupRoots() {
		var dir string
		_ = filepath.WalkDir(filepath.Join(root, n.Cgroup), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && d.Name() == id && strings.Contains(path, uid) {
				dir = path
				return filepath.SkipAll
			}
			return nil
		})
		if dir != "" {
			return cgroupProcs(dir)
		}
	}
	return nil
}

// containerdSocket is the node's containerd, seen from here.
func (n *RealNode) containerdSocket() string { return n.Root("/run/containerd/containerd.sock") }

// pauseImage is the pod sandbox image of every real node.
const pauseImage = "localhost/gpupack/pause:" + ImageTag

// startRealNode brings node i of the host up: namespaces, cgroup, network,
// containerd with the images, the kubelet and kube-proxy; it returns once
// the node is Ready.
func startRealNode(ctx context.Context, cp *controlPlane, h *host, b Binaries, images, dir string, i int, spec RealNodeSpec) (*RealNode, error) {
	n := &RealNode{Name: spec.Name, IP: h.nodeAddress(i), Dir: filepath.Join(dir, spec.Name), Cgroup: h.cgroupPrefix() + spec.Name}
	var err error
	if n.client, err = kubernetes.NewForConfig(cp.rest); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.stop()
		}
	}()
	for _, d := range []string{"root/run", "root/var/lib", "root/var/log", "cni"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := makeCgroup(filepath.Join(n.Cgroup, "system")); err != nil {
		return nil, err
	}
	if err := n.startNamespaces(ctx, h, i); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx, h, i); err != nil {
		return nil, err
	}
	if err := run("ctr", "--address", n.containerdSocket(), "--namespace", "k8s.io", "images", "import", images).err; err != nil {
		return nil, fmt.Errorf("importing the images into %s's containerd: %w", n.Name, err)
	}
	if err := n.startKubelet(ctx, cp, b, spec); err != nil {
		return nil, err
	}
	if err := n.startProxy(cp, b, h); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// startNS runs bin with args in the node's namespaces and cgroup, logging
// to <Dir>/<name>.log.
func (n *RealNode) startNS(name, bin string, args ...string) (*process, error) {
	var procs []string
	for _, root := range cgroupRoots() {
		procs = append(procs, filepath.Join(root, n.Cgroup, "system", "cgroup.procs"))
	}
	// The shell joins the cgroup before anything runs, so every process the
	// program starts (containerd's shims among them) is in it too.
	argv := []string{"-c", `for f in $GPUPACK_CGROUP_PROCS; do echo $$ > "$f" || exit 1; done; exec "$@"`, "sh"}
	if n.holder != nil {
		argv = append(argv, "nsenter", "--target", strconv.Itoa(n.holder.cmd.Process.Pid), "--mount", "--net", "--")
	}
	argv = append(argv, bin)
	argv = append(argv, args...)
	return start(n.Dir, name, "/bin/sh", argv, "GPUPACK_CGROUP_PROCS="+strings.Join(procs, " "))
}

// startNamespaces starts the process that holds the node's namespaces, mounts
// the node's own /run, /var/lib and /var/log in them, and wires its network:
// a veth from the host's bridge (eth0, the node's address) and routes to
// the other nodes' pods; no default route, so nothing leaves this machine.
func (n *RealNode) startNamespaces(ctx context.Context, h *host, i int) error {
	var err error
	if n.holder, err = n.startNS("namespaces", "unshare", "--mount", "--net", "--propagation", "slave", "sleep", "infinity"); err != nil {
		return err
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	pid := strconv.Itoa(n.holder.cmd.Process.Pid)
	if err := poll(ctx, "the node's namespaces", 10*time.Second, n.holder, func() bool {
		mnt, _ := os.Readlink("/proc/" + pid + "/ns/mnt")
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		return mnt != "" && mnt != self && strings.TrimSpace(string(comm)) == "sleep"
	}); err != nil {
		return err
	}
	ns := func(args ...string) []string {
		return append([]string{"--target", pid, "--mount", "--net", "--"}, args...)
	}
	s := &steps{}
	for _, top := range []string{"/run", "/var/lib", "/var/log"} {
		s.then("nsenter", ns("mount", "--bind", filepath.Join(n.Dir, "root", top), top)...)
	}
	veth := fmt.Sprintf("%sn%d", h.bridge, i)
	s.then("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pid).
		then("ip", "link", "set", veth, "master", h.bridge, "up").
		then("nsenter", ns("ip", "link", "set", "lo", "up")...).
		then("nsenter", ns("ip", "addr", "add", netip.PrefixFrom(n.IP, 24).String(), "dev", "eth0")...).
		then("nsenter", ns("ip", "link", "set", "eth0", "up")...).
		then("ip", "route", "replace", h.podCIDR(i).String(), "via", n.IP.String(), "dev", h.bridge)
	for j := range maxRealNodes {
		if j != i {
			s.then("nsenter", ns("ip", "route", "add", h.podCIDR(j).String(), "via", h.nodeAddress(j).String())...)
		}
	}
	return s.err
}

// startContainerd runs the node's containerd: default paths (the node's own
// /run and /var/lib), the pause image built here, CNI from Debian's plugins
// on a bridge of the node's own, and restrict_oom_score_adj (runc cannot
// set a sandbox's oom_score_adj without CAP_SYS_RESOURCE).
func (n *RealNode) startContainerd(ctx context.Context, h *host, i int) error {
	conf := filepath.Join(n.Dir, "containerd.toml")
	cniDir := filepath.Join(n.Dir, "cni")
	body := fmt.Sprintf(`version = 2
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`, pauseImage, cniBinDir, cniDir)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "gpupack",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
`, h.podCIDR(i))
	if err := os.WriteFile(filepath.Join(cniDir, "10-gpupack.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	var err error
	if n.containerd, err = n.startNS("containerd", "containerd", "--config", conf); err != nil {
		return err
	}
	return poll(ctx, "containerd to serve", 30*time.Second, n.containerd, func() bool {
		_, err := os.Stat(n.containerdSocket())
		return err == nil
	})
}

// startKubelet runs the kubelet with a node identity (Node authorizer), on
// the node's containerd, in the node's cgroup; cgroup v1 allowed, swap
// allowed, no cluster DNS (pods get no resolver: nothing leaves the
// machine), image garbage collection off (nothing could pull the images
// again).
func (n *RealNode) startKubelet(ctx context.Context, cp *controlPlane, b Binaries, spec RealNodeSpec) error {
	kubeconfig, err := cp.userKubeconfig("kubelet-"+n.Name, "system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	conf := filepath.Join(n.Dir, "kubelet.yaml")
	body := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %s
readOnlyPort: 0
healthzBindAddress: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
maxPods: 110
`, n.Cgroup, n.IP, n.IP, cp.pki.caCert)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return err
	}
	labels := []string{}
	for k, v := range spec.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	n.kubeletArgs = []string{"--config=" + conf, "--kubeconfig=" + kubeconfig, "--hostname-override=" + n.Name,
		"--node-ip=" + n.IP.String(), "--node-labels=" + strings.Join(labels, ","), "--v=2"}
	n.kubeletBin = b.Kubelet
	n.kubelet, err = n.startNS("kubelet", b.Kubelet, n.kubeletArgs...)
	return err
}

// startProxy runs kube-proxy (iptables, in the node's own network
// namespace), which takes pods to the API server through the kubernetes
// service as in any cluster.
func (n *RealNode) startProxy(cp *controlPlane, b Binaries, h *host) error {
	kubeconfig, err := cp.userKubeconfig("kube-proxy-"+n.Name, "system:kube-proxy")
	if err != nil {
		return err
	}
	conf := filepath.Join(n.Dir, "kube-proxy.yaml")
	body := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: iptables
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: %s:10256
metricsBindAddress: %s:10249
clusterCIDR: %s
# The machine's conntrack table is left as it is.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kubeconfig, n.Name, n.IP, n.IP, n.IP, h.clusterCIDR())
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return err
	}
	n.proxy, err = n.startNS("kube-proxy", b.Proxy, "--config="+conf, "--v=2")
	return err
}

// waitReady waits until the node reports Ready.
func (n *RealNode) waitReady(ctx context.Context, timeout time.Duration) error {
	return poll(ctx, "node "+n.Name+" to be Ready", timeout, n.kubelet, func() bool {
		node, err := n.client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	})
}

// RestartKubelet stops the kubelet (SIGTERM, as a service manager does)
// and starts it again; containers keep running under containerd. It returns
// once the node is Ready again.
func (n *RealNode) RestartKubelet(ctx context.Context) error {
	n.kubelet.stop(30 * time.Second)
	var err error
	if n.kubelet, err = n.startNS("kubelet", n.kubeletBin, n.kubeletArgs...); err != nil {
		return err
	}
	return n.waitReady(ctx, 2*time.Minute)
}

// stop ends everything the node runs: its kubelet first, then, with
// SIGKILL, every process in its cgroup (containerd, the shims, the
// containers, kube-proxy, the namespaces' holder; its mounts and network
// go with the last of them); then removes its cgroups.
func (n *RealNode) stop() {
	n.kubelet.stop(5 * time.Second)
	for _, root := range cgroupRoots() {
		killCgroup(filepath.Join(root, n.Cgroup))
	}
	for _, p := range []*process{n.proxy, n.containerd, n.holder} {
		p.kill()
	}
	for _, root := range cgroupRoots() {
		removeCgroup(filepath.Join(root, n.Cgroup))
	}
}
