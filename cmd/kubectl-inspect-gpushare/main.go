package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/inspect"
	"github.com/gpupack/gpupack/internal/version"
)

func main() {
	if err := newCommand(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newCommand(stdout, stderr io.Writer) *cobra.Command {
	var details, live bool
	var unit string
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	cmd := &cobra.Command{
		Use:   "kubectl-inspect-gpushare [-d] [node]",
		Short: "Show GPU memory per node and card, and the pods holding it (aliyun.com/gpu-mem)",
		Long: `kubectl inspect gpushare lists every node of the GPU sharing pool with the
memory allocated on each card, and the cluster's total. -d shows each card's
model, health, memory in use and utilisation (where the gpupack device plugin
publishes them) and the pods on each card. It reads nodes and pods from the
API server: the gpupack device plugin's card inventory, or gpushare's
allocatable memory, and the annotations the extender writes on pods.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := inspect.Options{}
			if len(args) == 1 {
				opts.Node = args[0]
			}
			if unit != "" {
				u, err := contract.ParseUnit(unit)
				if err != nil {
					return err
				}
				opts.Unit = u
			}
			rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
			if err != nil {
				return err
			}
			rc.UserAgent = "kubectl-inspect-gpushare/" + version.Get()
			client, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, client, opts, details, live, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&details, "details", "d", false, "show cards (model, health, use) and the pods on each card")
	f.BoolVar(&live, "live", true, "with -d, read memory in use and utilisation from the gpupack device plugin's metrics (through the API server's pod proxy)")
	f.StringVar(&unit, "memory-unit", "", "unit of aliyun.com/gpu-mem, GiB or MiB (default: inferred from the nodes)")
	// kubectl's own connection flags: --kubeconfig, --context, --cluster,
	// --user, --namespace, --server, --token, --request-timeout, ...
	f.StringVar(&rules.ExplicitPath, clientcmd.RecommendedConfigPathFlag, "", "path to the kubeconfig file")
	clientcmd.BindOverrideFlags(overrides, f, clientcmd.RecommendedConfigOverrideFlags(""))
	return cmd
}

func run(ctx context.Context, client kubernetes.Interface, opts inspect.Options, details, live bool, stdout, stderr io.Writer) error {
	c, err := inspect.Collect(ctx, client, opts)
	if err != nil {
		return err
	}
	if !details {
		return inspect.WriteSummary(stdout, c)
	}
	if live {
		for _, err := range c.AddLive(ctx, &inspect.PluginMetrics{Client: client}) {
			if !errors.Is(err, inspect.ErrNoDevicePlugin) {
				fmt.Fprintf(stderr, "warning: no live card state: %v\n", err)
			}
		}
	}
	return inspect.WriteDetails(stdout, c)
}
