package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/extender"
	"github.com/gpupack/gpupack/extender/config"
	"github.com/gpupack/gpupack/extender/policy"
	"github.com/gpupack/gpupack/internal/cli"
	"github.com/gpupack/gpupack/internal/version"
)

func main() {
	err := newCommand().Execute()
	klog.Flush() // the JSON format buffers; nothing logged is lost at exit
	if err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var kubeconfig, configFile, pol string
	var port int
	cmd := &cobra.Command{
		Use:   "gpupack-extender",
		Short: "kube-scheduler extender that bin-packs GPU memory shares (aliyun.com/gpu-mem) across cards and nodes",
		Long: `gpupack-extender answers kube-scheduler's extender calls for pods that ask for
aliyun.com/gpu-mem or aliyun.com/gpu-count: filter, prioritize and bind under
the prefix /gpushare-scheduler, as gpushare-scheduler-extender did. It also
serves /gpushare-scheduler/inspect[/<node>], /healthz, /readyz, /metrics and
/version.

Settings not given as flags come from --config, a YAML file (fields: port,
address, probeAddress, policy, memoryUnit, signingKeyFile, workloadCoverage,
parallelism, bindTimeout, clientQPS, clientBurst, tls{certFile,keyFile,
clientCAFile}).
Flags win over the file.`,
		SilenceUsage: true,
		Version:      version.Get(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := &config.Config{}
			if configFile != "" {
				var err error
				if cfg, err = config.Load(configFile); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("port") {
				cfg.Port = port
			}
			if cmd.Flags().Changed("policy") {
				cfg.Policy = pol
			}
			config.SetDefaults(cfg)
			if errs := config.Validate(cfg); len(errs) > 0 {
				return fmt.Errorf("invalid configuration: %w", errs.ToAggregate())
			}
			rc, err := cli.RestConfig(kubeconfig)
			if err != nil {
				return err
			}
			rc.QPS, rc.Burst = cfg.ClientQPS, cfg.ClientBurst
			rc.UserAgent = "gpupack-extender/" + version.Get()
			client, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("building the API client: %w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx = klog.NewContext(ctx, klog.Background().WithName("gpupack-extender"))
			return extender.Run(ctx, cfg, client)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty uses the in-cluster config")
	f.IntVar(&port, "port", config.DefaultPort, "port to serve the extender API on")
	f.StringVar(&pol, "policy", "default", fmt.Sprintf("scoring policy: one of %v, or default (%s)", policy.Names(), policy.Default))
	f.StringVar(&configFile, "config", "", "YAML configuration file for the other settings (see above)")
	logging := cli.AddLoggingFlags(f)
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error { return logging.Apply() }
	return cmd
}
