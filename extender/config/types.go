package config

import (
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config is the extender's configuration (YAML or JSON file).
type Config struct {
	// Port the extender listens on.
	Port int `json:"port,omitempty"`
	// Address to bind, e.g. "127.0.0.1" for a sidecar on loopback; "" for all.
	Address string `json:"address,omitempty"`
	// ProbeAddress, when set (host:port, e.g. ":8081"), serves /healthz,
	// /readyz, /metrics and /version there too, over plain HTTP, so that the
	// kubelet can probe and Prometheus can scrape an extender whose verbs
	// listen on loopback only.
	ProbeAddress string `json:"probeAddress,omitempty"`
	// Policy names the placement policy: one of policy.Names() (bestfit,
	// binpack, fgd, fill, packing, random, spread), or "default" (fill).
	Policy string `json:"policy,omitempty"`
	// MemoryUnit of aliyun.com/gpu-mem: GiB or MiB, as the device plugins use.
	MemoryUnit string `json:"memoryUnit,omitempty"`
	// SigningKeyFile holds the key that signs every decision: any bytes, at
	// least extender.MinSigningKeyBytes (32) once surrounding white space is
	// trimmed; a shorter key is refused at start-up. Decisions signed with
	// it are trusted when state is rebuilt.
	// Without it a random key is used, and after a restart earlier decisions
	// are used only where they fit (never over-committing a card).
	SigningKeyFile string `json:"signingKeyFile,omitempty"`
	// WorkloadCoverage is the share of pods, in (0, 1], whose shapes (the
	// most frequent first) the workload estimate keeps; the policies that
	// read one (fill, fgd) weigh nodes by it. 0: the policy's own
	// (policy.Policy.WorkloadCoverage: fill 0.99, fgd 0.95).
	WorkloadCoverage float64 `json:"workloadCoverage,omitempty"`
	// DeprecatedFGDCoverage is workloadCoverage's former name, read for
	// configuration files written before; SetDefaults moves it over.
	DeprecatedFGDCoverage float64 `json:"fgdCoverage,omitempty"`
	// FilterKeeps is which nodes filter answers for a GPU pod: "fitting"
	// (the default; every node where the pod fits, as gpushare's extender
	// answers) or "best" (only the nodes where the policy places the pod
	// best: those whose score ties the highest, a uniform sample of at most
	// MaxBestNodes of them). Where kube-scheduler's profile scores with the
	// extender alone, "best" leads to the same choices, since kube-scheduler
	// picks uniformly among the nodes of the highest score, and spares
	// kube-scheduler and the extender the encoding of every fitting node's
	// name three more times for each pod. Where the profile's own score
	// plugins also rank nodes, "best" leaves them to break the policy's
	// ties only.
	FilterKeeps FilterKeeps `json:"filterKeeps,omitempty"`
	// Parallelism is how many goroutines evaluate nodes for one pod.
	Parallelism int `json:"parallelism,omitempty"`
	// BindTimeout bounds the Binding, which carries the decision.
	BindTimeout v1.Duration `json:"bindTimeout,omitempty"`
	// ClientQPS and ClientBurst are the API client's rate limits.
	ClientQPS   float32 `json:"clientQPS,omitempty"`
	ClientBurst int     `json:"clientBurst,omitempty"`
	// TLS serves HTTPS when set.
	TLS *TLS `json:"tls,omitempty"`
	// Profiling serves Go's profiles (net/http/pprof) under /debug/pprof/
	// wherever /metrics is served, for an operator to see where the
	// extender's time goes (go tool pprof http://HOST:PORT/debug/pprof/
	// profile). Off by default: a profile costs CPU while it is taken, and
	// the routes tell anyone who can reach them about the process.
	Profiling bool `json:"profiling,omitempty"`
}

// TLS is the extender's serving certificate and, optionally, the CA of the
// client certificates that may call /bind (kube-scheduler's extender
// tlsConfig can present one).
type TLS struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// ClientCAFile: when set, /bind requires a client certificate signed by
	// this CA; the other routes accept one but do not require it.
	ClientCAFile string `json:"clientCAFile,omitempty"`
}

// BindTimeoutDuration is BindTimeout as a time.Duration.
func (c *Config) BindTimeoutDuration() time.Duration { return c.BindTimeout.Duration }

// FilterKeeps is which nodes filter answers: see Config.FilterKeeps.
type FilterKeeps string

// The values of FilterKeeps.
const (
	FilterKeepsFitting FilterKeeps = "fitting"
	FilterKeepsBest    FilterKeeps = "best"
)

// MaxBestNodes bounds the nodes filter answers under FilterKeepsBest: a
// uniform sample of the tied nodes leaves kube-scheduler's uniform choice
// among them uniform over all of them.
const MaxBestNodes = 16
