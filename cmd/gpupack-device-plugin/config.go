package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpupack/gpupack/deviceplugin/config"
	"github.com/gpupack/gpupack/internal/cli"
	"github.com/gpupack/gpupack/internal/version"
)

// ReasonConfigRefused is the Warning event on the Node when its
// configuration cannot be used: its label names no configuration, or the
// file is invalid.
const ReasonConfigRefused = "DevicePluginConfigRefused"

// errConfigChanged ends the plugin when its configuration changed.
var errConfigChanged = errors.New("the device plugin's configuration changed")

// setting is a flag with a field in the configuration file.
type setting struct {
	flag, field string
	apply       func(*config.Config)
}

// settings are the flags the configuration file can set, each with the
// field it overrides when set on the command line.
func (f *flags) settings() []setting {
	return []setting{
		{"nvml", "nvml", func(c *config.Config) { c.NVML = f.nvmlSpec }},
		{"nvml-library", "nvmlLibrary", func(c *config.Config) { c.NVMLLibrary = f.nvmlLibrary }},
		{"mock-state", "mockState", func(c *config.Config) { c.MockState = f.mockState }},
		{"memory-unit", "memoryUnit", func(c *config.Config) { c.MemoryUnit = f.unit }},
		{"device-plugin-dir", "devicePluginDir", func(c *config.Config) { c.DevicePluginDir = f.dir }},
		{"proc-root", "procRoot", func(c *config.Config) { c.ProcRoot = f.procRoot }},
		{"pod-resources-socket", "podResourcesSocket", func(c *config.Config) { c.PodResourcesSocket = &f.podResources }},
		{"metrics-port", "metricsPort", func(c *config.Config) { c.MetricsPort = &f.metricsPort }},
		{"evict-over-share-after", "evictOverShareAfter", func(c *config.Config) { c.EvictOverShareAfter = &metav1.Duration{Duration: f.evictAfter} }},
		{"usage-interval", "usageInterval", func(c *config.Config) { c.UsageInterval = &metav1.Duration{Duration: f.usageInterval} }},
		{"reconcile-interval", "reconcileInterval", func(c *config.Config) { c.ReconcileInterval = &metav1.Duration{Duration: f.reconcileInterval} }},
		{"health-recovery", "healthRecovery", func(c *config.Config) { c.HealthRecovery = &metav1.Duration{Duration: f.quiet} }},
		{"ignored-xids", "ignoredXids", func(c *config.Config) { c.IgnoredXids = xids(f.ignoredXids) }},
		{"cgpu-disable", "cgpuDisable", func(c *config.Config) { c.CGPUDisable = f.cgpuDisabled }},
	}
}

// source is where the flags say the configuration comes from.
func (f *flags) source() config.Source {
	return config.Source{File: f.configFile, Dir: f.configDir, Label: f.configLabel, Default: f.configDefault}
}

// checkCommand refuses the flags that are not in the file.
func (f *flags) checkCommand() []error {
	var errs []error
	if f.node == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required"))
	}
	if f.configFile != "" && f.configDir != "" {
		errs = append(errs, errors.New("--config-file and --config-dir: set one, not both"))
	}
	if f.configDir != "" {
		if f.configLabel == "" {
			errs = append(errs, errors.New("--config-label: required with --config-dir"))
		}
		if f.configDefault == "" {
			errs = append(errs, errors.New("--config-default: required with --config-dir"))
		}
	}
	if f.configPoll <= 0 {
		errs = append(errs, fmt.Errorf("--config-poll-interval=%v: want a positive duration, e.g. 30s", f.configPoll))
	}
	return errs
}

// configure is the configuration the node runs with: the selected file
// (none: sel nil), over it the flags set on the command line, then the
// defaults, validated. Each error names the flag, or the file and its field.
func (f *flags) configure(fs *pflag.FlagSet, sel *config.Selection) (*config.Config, []error) {
	c := &config.Config{Version: config.Version}
	where := ""
	if sel != nil {
		var err error
		if c, err = sel.Config(); err != nil {
			return nil, []error{err}
		}
		where = "device plugin config " + sel.Path + ": "
	}
	byField := map[string]string{}
	for _, s := range f.settings() {
		if fs.Changed(s.flag) {
			s.apply(c)
			byField[s.field] = s.flag
		}
	}
	config.SetDefaults(c)
	var errs []error
	for _, e := range config.Validate(c) {
		if flag, ok := byField[e.Field]; ok {
			e := *e
			e.Field = "--" + flag
			errs = append(errs, &e)
			continue
		}
		errs = append(errs, fmt.Errorf("%s%w", where, e))
	}
	return c, errs
}

// resolve selects the node's configuration (reading its label when the
// configurations are a folder) and makes it what the node runs with. A
// configuration that cannot be used is refused at start, logged and, where
// the node is known, a Warning event on it.
func (f *flags) resolve(ctx context.Context, fs *pflag.FlagSet, src config.Source, client func() (kubernetes.Interface, error)) (*config.Selection, *config.Config, error) {
	errs := f.checkCommand()
	var sel *config.Selection
	if len(errs) == 0 {
		var labels map[string]string
		var cs kubernetes.Interface
		if src.Dir != "" {
			var err error
			if cs, err = client(); err != nil {
				return nil, nil, err
			}
			if labels, err = nodeLabels(cs, f.node)(ctx); err != nil {
				return nil, nil, err
			}
		}
		var err error
		if sel, err = src.Select(labels); err != nil {
			err = fmt.Errorf("node %s: %w", f.node, err)
			if cs != nil {
				warnNode(ctx, cs, f.node, err.Error())
			}
			return nil, nil, err
		}
		c, cerrs := f.configure(fs, sel)
		if len(cerrs) > 0 && cs != nil {
			warnNode(ctx, cs, f.node, fmt.Sprintf("node %s: %v", f.node, errors.Join(cerrs...)))
		}
		if len(cerrs) == 0 {
			return sel, c, nil
		}
		return nil, nil, errors.Join(cerrs...)
	}
	// The command's own errors and the flags' at once.
	_, cerrs := f.configure(fs, nil)
	return nil, nil, errors.Join(append(errs, cerrs...)...)
}

// watchConfig waits for the node's configuration to change to one that
// can be used, then ends the plugin (cancel with errConfigChanged) so that
// its DaemonSet restarts the container with it. A change that cannot be
// used is logged and a Warning event on the Node; the plugin keeps what it
// runs with.
func (f *flags) watchConfig(ctx context.Context, fs *pflag.FlagSet, src config.Source, current *config.Selection, cs kubernetes.Interface, cancel context.CancelCauseFunc) {
	log := klog.FromContext(ctx)
	w := config.Watcher{
		Source: src, Every: f.configPoll,
		Check: func(s *config.Selection) error {
			_, errs := f.configure(fs, s)
			return errors.Join(errs...)
		},
		Refused: func(err error) {
			log.Error(err, "The device plugin's configuration changed but cannot be used: keeping the one it runs with",
				"node", f.node, "label", src.Label, "running", current.Name)
			warnNode(ctx, cs, f.node, fmt.Sprintf("node %s: configuration change refused, keeping %q: %v", f.node, current.Name, err))
		},
	}
	if src.Dir != "" {
		labels, err := watchNodeLabels(ctx, cs, f.node)
		if err != nil {
			return // ctx ended before the watch began
		}
		w.Labels = labels
	}
	next, err := w.Wait(ctx, current)
	if err != nil {
		return // ctx ended
	}
	log.Info("The device plugin's configuration changed: exiting so that the container restarts with it",
		"node", f.node, "label", src.Label, "from", current.Name, "to", next.Name, "path", next.Path)
	cancel(errConfigChanged)
}

// logConfig logs what the node runs with, and which flags override the
// file.
func logConfig(log klog.Logger, fs *pflag.FlagSet, f *flags, sel *config.Selection, c *config.Config) {
	var over []string
	for _, s := range f.settings() {
		if fs.Changed(s.flag) {
			over = append(over, "--"+s.flag)
		}
	}
	b, _ := json.Marshal(c)
	if sel == nil {
		log.Info("Configuration", "file", "none", "settings", string(b))
		return
	}
	log.Info("Configuration", "file", sel.Path, "name", sel.Name, "byLabel", sel.Labelled, "flagsOverFile", over, "settings", string(b))
}

// lazyClient builds the API client once, when first needed: a plugin whose
// flags are refused never needs one.
func lazyClient(kubeconfig string) func() (kubernetes.Interface, error) {
	return sync.OnceValues(func() (kubernetes.Interface, error) {
		rc, err := cli.RestConfig(kubeconfig)
		if err != nil {
			return nil, err
		}
		rc.UserAgent = "gpupack-device-plugin/" + version.Get()
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("building the API client: %w", err)
		}
		return cs, nil
	})
}

// nodeLabels reads the node's labels.
func nodeLabels(cs kubernetes.Interface, node string) func(context.Context) (map[string]string, error) {
	return func(ctx context.Context) (map[string]string, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading node %s for its configuration label: %w", node, err)
		}
		return n.Labels, nil
	}
}

// watchNodeLabels watches the node (an informer of that one node, by a
// field selector) and returns a reader of its labels from the informer's
// cache: a poll of the labels then costs the API server nothing. It
// returns once the cache holds the node, or with ctx's error.
func watchNodeLabels(ctx context.Context, cs kubernetes.Interface, node string) (func(context.Context) (map[string]string, error), error) {
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", node).String()
	}))
	lister := factory.Core().V1().Nodes().Lister()
	factory.Start(ctx.Done())
	for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, ctx.Err()
		}
	}
	return func(context.Context) (map[string]string, error) {
		n, err := lister.Get(node)
		if err != nil {
			return nil, fmt.Errorf("node %s, as watched for its configuration label: %w", node, err)
		}
		return n.Labels, nil
	}, nil
}

// warnNode records a Warning event on the node at once (the plugin may be
// about to exit), as the plugin's other node events are recorded.
func warnNode(ctx context.Context, cs kubernetes.Interface, node, msg string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: node + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)},
		Reason:         ReasonConfigRefused, Message: msg, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "gpupack-device-plugin", Host: node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		klog.FromContext(ctx).Error(err, "Recording the configuration event", "node", node)
	}
}
