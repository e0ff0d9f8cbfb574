package extender

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/cache"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/extender/policy"
)

// Run starts the informers and serves the extender until ctx ends. The
// server answers /healthz at once and /readyz once the informers synced.
func Run(ctx context.Context, cfg *config.Config, client kubernetes.Interface) error {
	log := klog.FromContext(ctx)
	unit, err := contract.ParseUnit(cfg.MemoryUnit)
	if err != nil {
		return err
	}
	key, err := SigningKey(cfg.SigningKeyFile)
	if err != nil {
		return err
	}
	if cfg.SigningKeyFile == "" {
		log.Info("No signingKeyFile configured: decisions are signed with a random key, so after a restart earlier decisions are checked for fit instead of trusted")
	}
	pol, err := policy.Get(policy.Name(cfg.Policy))
	if err != nil {
		return err
	}
	c := cache.New(cache.Options{Unit: unit, SigningKey: key, Policy: pol, WorkloadCoverage: cfg.WorkloadCoverage, Logger: log.WithName("cache")})
	factory := informers.NewSharedInformerFactory(client, 0)
	synced, err := c.Watch(factory)
	if err != nil {
		return fmt.Errorf("watching nodes and pods: %w", err)
	}
	podLister := factory.Core().V1().Pods().Lister()
	ready := func() bool {
		for _, s := range synced {
			if !s() {
				return false
			}
		}
		return true
	}
	srv, err := NewServer(cfg, Deps{Client: client, Pods: podLister, Cache: c, Key: key, Ready: ready})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	go func() {
		start := time.Now()
		if toolscache.WaitForCacheSync(ctx.Done(), synced...) {
			log.Info("Informers synced: state rebuilt from the cluster", "duration", time.Since(start))
		}
	}()
	return srv.ListenAndServe(ctx)
}
