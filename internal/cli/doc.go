// Package cli holds what the commands share: the API client configuration
// and klog's flags.
//
// It must not depend on go-nvml: the extender and the kubectl plugin use it.
package cli
