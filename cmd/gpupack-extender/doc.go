// Command gpupack-extender is gpupack's kube-scheduler extender: flags and
// wiring only; the extender itself is package extender. Run it with --help
// for its flags and configuration file.
package main
