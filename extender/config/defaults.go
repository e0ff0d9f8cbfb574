package config

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpupack/gpupack/contract"
	"github.com/gpupack/gpupack/extender/policy"
)

// Defaults.
const (
	DefaultPort        = 39999
	DefaultParallelism = 16
	DefaultBindTimeout = 30 * time.Second
	DefaultClientQPS   = 100
	DefaultClientBurst = 200
)

// Default returns a configuration with every default filled in.
func Default() *Config {
	c := &Config{}
	SetDefaults(c)
	return c
}

// SetDefaults fills the unset fields of c.
func SetDefaults(c *Config) {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Policy == "" {
		c.Policy = string(policy.Default)
	}
	if c.MemoryUnit == "" {
		c.MemoryUnit = string(contract.DefaultUnit)
	}
	if c.WorkloadCoverage == 0 {
		c.WorkloadCoverage, c.DeprecatedFGDCoverage = c.DeprecatedFGDCoverage, 0
	}
	if c.FilterKeeps == "" {
		c.FilterKeeps = FilterKeepsFitting
	}
	if c.Parallelism == 0 {
		c.Parallelism = DefaultParallelism
	}
	if c.BindTimeout.Duration == 0 {
		c.BindTimeout = metav1.Duration{Duration: DefaultBindTimeout}
	}
	if c.ClientQPS == 0 {
		c.ClientQPS = DefaultClientQPS
	}
	if c.ClientBurst == 0 {
		c.ClientBurst = DefaultClientBurst
	}
}
