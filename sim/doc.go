// Package sim replays a GPU cluster trace (Alibaba's openb,
// cluster-trace-gpu-v2023) through gpupack's placement policies under the
// published protocol of Weng et al., "Beware of Fragmentation" (USENIX ATC
// 2023): it reads and validates the node and pod lists, orders and inflates
// the pods, schedules them one at a time with extender/policy (the code the
// extender runs: there is no second implementation of any policy), and
// writes the figures (summary.json), every placement (placements-<seed>.csv)
// and the allocation curve (SVG). Beside a policy's figures it can put
// the limits of the arrived pods (Limits): a bound no placement beats, the
// optimum of a linear program solved by GLPK's glpsol, and the best offline
// packing found.
//
// It depends on extender/policy and contract only: no client-go, no HTTP,
// no go-nvml (it builds with CGO_ENABLED=0), no clock in the placement path
// other than timing the decisions.
package sim
