// Package cache is the extender's view of the cluster: per node, per card, the
// memory each pod and container holds, kept from client-go shared informers
// on nodes and pods, plus the decisions the extender has made but the API
// server has not yet shown back (binds in flight).
//
// State is always derived from the API objects, so a restarted extender
// rebuilds it from pod annotations and loses nothing. Only decisions signed
// with the extender's key are trusted as such (see contract.Sign); anything
// else a pod claims is used only where it fits, after every trusted decision.
// A pod's states and what moves it between them are one table, at the type
// state (pod.go).
//
// Placement reads a node as a policy.Node that the cache publishes on each
// change and never changes afterwards (Snapshot), so an evaluation runs
// without the cache's lock; each node has a slot, under which
// policy.Answers keeps placement's answers while the node is unchanged.
//
// It depends on client-go, contract and the policy package; it knows nothing
// of HTTP.
package cache
