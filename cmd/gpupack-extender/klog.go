package main

import (
	"flag"

	"k8s.io/klog/v2"
)

// flagSet holds klog's flags (-v, --vmodule, ...).
func flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(fs)
	return fs
}
