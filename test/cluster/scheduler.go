package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// SchedulerName is the profile GPU pods opt into.
const SchedulerName = "gpupack-scheduler"

// PlainSchedulerName is the only profile of the second kube-scheduler that
// Options.PlainScheduler runs: kube-scheduler's defaults and no extender.
const PlainSchedulerName = "plain-scheduler"

// schedulerConfig is a KubeSchedulerConfiguration v1: profile first
// (default-scheduler, say) untouched, and, given the extender's URL,
// profile gpupack-scheduler whose only scores are the extender's, so our
// policy decides where GPU pods go. The extender manages both GPU
// resources, caches nodes (node-name mode) and binds. Extenders are
// kube-scheduler's, not a profile's: with one, every profile calls it for
// the pods that ask for a resource it manages. Without an extender, the
// gpupack profile is left to a scheduler running in the cluster (the
// chart's).
func schedulerConfig(kubeconfig, first, extenderURL string) string {
	cfg := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
percentageOfNodesToScore: 100
profiles:
- schedulerName: %s
`, kubeconfig, first)
	if extenderURL == "" {
		return cfg
	}
	return cfg + fmt.Sprintf(`- schedulerName: %s
  plugins:
    score:
      disabled:
      - name: "*"
extenders:
- urlPrefix: %q
  filterVerb: filter
  prioritizeVerb: prioritize
  bindVerb: bind
  weight: 1
  enableHTTPS: false
  nodeCacheCapable: true
  ignorable: false
  httpTimeout: 30s
  managedResources:
  - name: aliyun.com/gpu-mem
    ignoredByScheduler: false
  - name: aliyun.com/gpu-count
    ignoredByScheduler: false
`, SchedulerName, extenderURL)
}

// startScheduler runs kube-scheduler with config, as name (its log and
// its configuration file are named after it).
func startScheduler(ctx context.Context, b Binaries, dir, name, kubeconfig, config string) (*process, error) {
	cfg := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := start(dir, name, b.Scheduler, []string{
		"--config=" + cfg, "--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig,
		"--v=2",
	})
	if err != nil {
		return nil, err
	}
	insecure := insecureClient()
	if err := poll(ctx, name+" to be healthy", 60*time.Second, p, func() bool {
		resp, err := insecure.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}
