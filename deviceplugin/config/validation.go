package config

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/gpupack/gpupack/contract"
)

// Validate checks a defaulted configuration; each error names its field.
func Validate(c *Config) field.ErrorList {
	var errs field.ErrorList
	switch c.Version {
	case Version:
	case "":
		errs = append(errs, field.Required(field.NewPath("version"), "the file's format: "+Version))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("version"), c.Version, []string{Version}))
	}
	if spec, mock := strings.CutPrefix(c.NVML, "mock:"); c.NVML != "real" && (!mock || spec == "") {
		errs = append(errs, field.Invalid(field.NewPath("nvml"), c.NVML, `want "real", "mock:<preset>" or "mock:<file>"`))
	}
	if _, err := contract.ParseUnit(c.MemoryUnit); err != nil {
		errs = append(errs, field.NotSupported(field.NewPath("memoryUnit"), c.MemoryUnit, []string{string(contract.GiB), string(contract.MiB)}))
	}
	if c.DevicePluginDir == "" {
		errs = append(errs, field.Required(field.NewPath("devicePluginDir"), "the kubelet's device-plugins folder"))
	}
	if c.ProcRoot == "" {
		errs = append(errs, field.Required(field.NewPath("procRoot"), "the host's /proc"))
	}
	if p := c.MetricsPort; p == nil || *p < 0 || *p > 65535 {
		errs = append(errs, field.Invalid(field.NewPath("metricsPort"), deref(p), "must be 1..65535, or 0 for none"))
	}
	for _, d := range []struct {
		name string
		v    *metav1.Duration
		zero string // "": 0 is refused too
	}{
		{"usageInterval", c.UsageInterval, ""},
		{"reconcileInterval", c.ReconcileInterval, ""},
		{"evictOverShareAfter", c.EvictOverShareAfter, "only report"},
		// nvml takes a Quiet of 0 for its default, not for "at once"
		{"healthRecovery", c.HealthRecovery, ""},
	} {
		p := field.NewPath(d.name)
		switch {
		case d.v == nil:
			errs = append(errs, field.Required(p, "a duration, e.g. 5s"))
		case d.zero == "" && d.v.Duration <= 0:
			errs = append(errs, field.Invalid(p, d.v.Duration.String(), "must be a positive duration, e.g. 5s"))
		case d.v.Duration < 0:
			errs = append(errs, field.Invalid(p, d.v.Duration.String(), "must be 0s ("+d.zero+") or a positive duration"))
		}
	}
	return errs
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
