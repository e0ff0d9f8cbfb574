// Command gpupack-sim replays a node list and a pod list of the openb trace
// through the extender's own placement code; see --help.
//
// It builds with CGO_ENABLED=0: no client-go, no go-nvml.
package main
