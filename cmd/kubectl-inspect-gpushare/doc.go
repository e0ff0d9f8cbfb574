// Command kubectl-inspect-gpushare is the kubectl plugin behind `kubectl
// inspect gpushare [-d] [node]`: GPU memory per node and card, and the
// pods holding it. Put it on the PATH; see the inspect package.
//
// It builds with CGO_ENABLED=0: nothing of the extender, the device
// plugin or go-nvml.
package main
