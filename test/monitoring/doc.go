// Package monitoring checks the Grafana dashboard the chart ships
// (deploy/chart/gpupack/dashboards/gpupack.json) against the metrics that
// gpupack's components really export: every panel's and variable's PromQL
// is parsed with Prometheus's own parser, and each metric, label matcher,
// grouping, vector-matching and legend label must exist on what the
// extender's and the device plugin's registries serve. It needs no
// cluster: both components run in the test process, over a fake clientset
// and the simulated NVML, served over real HTTP.
//
// It lives in the test module so that the product's go.mod does not carry
// the Prometheus server module.
package monitoring
