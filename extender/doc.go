// Package extender is gpupack's kube-scheduler extender: the HTTP server that
// answers filter, prioritize and bind for pods asking for aliyun.com/gpu-mem
// (gpushare's wire contract), plus /inspect, health, readiness, version and
// Prometheus metrics.
//
// Placement itself lives in extender/policy (pure functions) and cluster
// state in extender/cache; this package turns HTTP requests into calls of
// those and records decisions on the pod. It must not import go-nvml or
// anything else that needs cgo.
package extender
