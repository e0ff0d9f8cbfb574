package cli

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	logsapi "k8s.io/component-base/logs/api/v1"
	// the json --logging-format
	_ "k8s.io/component-base/logs/json/register"
)

// RestConfig loads a kubeconfig, or the in-cluster config when the path is
// empty.
func RestConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig given and not running in a cluster: %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

// Logging is a command's logging flags, the Kubernetes components' own
// (component-base): --logging-format (text, or json: one JSON object a
// line), -v, --vmodule, --log-flush-frequency and the split-stream options.
type Logging struct {
	c *logsapi.LoggingConfiguration
}

// AddLoggingFlags adds the logging flags to fs; call Apply once they are
// parsed.
func AddLoggingFlags(fs *pflag.FlagSet) *Logging {
	c := logsapi.NewLoggingConfiguration()
	logsapi.AddFlags(c, fs)
	return &Logging{c: c}
}

// Apply validates the parsed flags and sets klog up with them, before
// anything logs: a bad value (an unknown --logging-format) is an error that
// names the flag and what is accepted.
func (l *Logging) Apply() error { return l.apply(nil) }

func (l *Logging) apply(o *logsapi.LoggingOptions) error {
	if err := logsapi.ValidateAndApplyWithOptions(l.c, o, nil); err != nil {
		return fmt.Errorf("logging flags (--logging-format is text or json): %w", err)
	}
	return nil
}
