package config

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// Load reads a configuration file (YAML or JSON); unknown fields are errors.
// Defaults are not set: call SetDefaults after applying overrides.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading extender config: %w", err)
	}
	c := &Config{}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, fmt.Errorf("extender config %s: %w", path, err)
	}
	return c, nil
}
