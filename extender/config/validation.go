package config

import (
	"net"
	"strconv"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
)

// Validate checks a defaulted configuration.
func Validate(c *Config) field.ErrorList {
	var errs field.ErrorList
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, field.Invalid(field.NewPath("port"), c.Port, "must be 1..65535"))
	}
	if c.ProbeAddress != "" {
		if _, port, err := net.SplitHostPort(c.ProbeAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("probeAddress"), c.ProbeAddress, "must be host:port, e.g. \":8081\""))
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs = append(errs, field.Invalid(field.NewPath("probeAddress"), c.ProbeAddress, "port must be 1..65535"))
		} else if n == c.Port {
			errs = append(errs, field.Invalid(field.NewPath("probeAddress"), c.ProbeAddress, "must use another port than port"))
		}
	}
	if _, err := policy.Get(policy.Name(c.Policy)); err != nil {
		errs = append(errs, field.NotSupported(field.NewPath("policy"), c.Policy, append(policy.Names(), "default")))
	}
	if _, err := contract.ParseUnit(c.MemoryUnit); err != nil {
		errs = append(errs, field.NotSupported(field.NewPath("memoryUnit"), c.MemoryUnit, []string{string(contract.GiB), string(contract.MiB)}))
	}
	if c.WorkloadCoverage < 0 || c.WorkloadCoverage > 1 {
		errs = append(errs, field.Invalid(field.NewPath("workloadCoverage"), c.WorkloadCoverage, "must be in (0, 1], or 0 for the policy's own"))
	}
	if c.DeprecatedFGDCoverage != 0 {
		errs = append(errs, field.Forbidden(field.NewPath("fgdCoverage"), "is workloadCoverage's former name: set workloadCoverage only"))
	}
	if c.FilterKeeps != FilterKeepsFitting && c.FilterKeeps != FilterKeepsBest {
		errs = append(errs, field.NotSupported(field.NewPath("filterKeeps"), c.FilterKeeps, []FilterKeeps{FilterKeepsFitting, FilterKeepsBest}))
	}
	if c.Parallelism < 1 {
		errs = append(errs, field.Invalid(field.NewPath("parallelism"), c.Parallelism, "must be at least 1"))
	}
	if c.BindTimeout.Duration <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("bindTimeout"), c.BindTimeout.Duration.String(), "must be positive"))
	}
	if c.ClientQPS <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("clientQPS"), c.ClientQPS, "must be positive"))
	}
	if c.ClientBurst < 1 {
		errs = append(errs, field.Invalid(field.NewPath("clientBurst"), c.ClientBurst, "must be at least 1"))
	}
	if t := c.TLS; t != nil {
		p := field.NewPath("tls")
		if t.CertFile == "" {
			errs = append(errs, field.Required(p.Child("certFile"), "the serving certificate"))
		}
		if t.KeyFile == "" {
			errs = append(errs, field.Required(p.Child("keyFile"), "the serving certificate's key"))
		}
	}
	return errs
}
