package cli

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	logsapi "k8s.io/component-base/logs/api/v1"
	// the json --logging-format
	_ "k8s.io/component-base/logs/json/register"
)

// RestConfig loads a kubeconfig, or the in-cluster config when the path is
// empty, and talks protobuf, as the control plane's own components do: our
// clients read and write only built-in kinds. Against JSON it spares the
// API server a second encoding of every watch event (the schedulers take
// protobuf) and the client most of its decoding. (Under make throughput at
// 1,000 nodes the change was within one run's noise: the extender's CPU
// per pod is mostly its filter and prioritize, not its watches.)
func RestConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("no --kubeconfig given and not running in a cluster: %w", err)
		}
	} else if rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
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
