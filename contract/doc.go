// Package contract holds the wire contract that the gpupack extender, device
// plugin and kubectl plugin share with each other and with clusters that still
// run Aliyun's gpushare components: resource names, annotation keys,
// environment variable names, the memory unit, the JSON documents stored in
// annotations, and the one rule by which the extender and the kubectl plugin
// read a Node's cards (CardsOf).
//
// It must stay small and depend on nothing but the Kubernetes API types and
// the standard library, so that every component (cgo or not) can import it.
package contract
