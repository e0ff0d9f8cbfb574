// Package inspect is what `kubectl inspect gpushare` shows: the GPU
// memory of every node of the sharing pool, per card, and which pods hold
// it, read from the API server alone (no call to the extender).
//
// Cards are read as the extender reads them (contract.CardsOf): the gpupack
// device plugin's inventory annotation on the Node (model, size, health),
// or, for nodes still run by gpushare's device plugin, allocatable
// aliyun.com/gpu-mem split evenly over aliyun.com/gpu-count cards; a node
// with gpu-mem but no gpu-count has no card. Shares come from the
// annotations the extender writes on pods (the allocation, or gpushare's
// card index). Live use and utilisation come from the device plugin's
// /metrics through the API server's pod proxy, where a gpupack device
// plugin pod runs, read by the Prometheus text parser (prometheus/common's
// expfmt).
//
// It depends on the contract package, client-go, prometheus/common's expfmt
// and model, prometheus/client_model and the standard library only: no cgo,
// no go-nvml, nothing of the extender.
package inspect
