package config

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"sigs.k8s.io/yaml"
)

// Load reads a configuration file (YAML or JSON); unknown fields are
// errors. Defaults are not set: call SetDefaults after applying overrides,
// then Validate.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading device plugin config: %w", err)
	}
	return Parse(b, path)
}

// Parse reads a configuration from data (YAML or JSON) read from path;
// unknown fields are errors. An error names the field that caused it.
func Parse(data []byte, path string) (*Config, error) {
	c := &Config{}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("device plugin config %s: %s%w", path, failingField(data), err)
	}
	return c, nil
}

// failingField is "<field>: " for the first top-level field that does not
// decode on its own, "" when none is found: the JSON decoder does not name
// the field when a value's own decoding fails (a bad duration).
func failingField(data []byte) string {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return ""
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(j, &fields) != nil {
		return ""
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		one, _ := json.Marshal(map[string]json.RawMessage{k: fields[k]})
		if yaml.UnmarshalStrict(one, &Config{}) != nil {
			return k + ": "
		}
	}
	return ""
}
