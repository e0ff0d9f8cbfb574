// Package policy decides where a GPU-sharing pod goes: which node, and which
// cards on it. Everything here is a pure function of the state it is given
// (nodes, cards, a request, a workload estimate): no clients, no clocks, no
// locks (a workload builds its derived indexes once, under a sync.Once). The
// extender's HTTP handlers and the trace simulator (sim, cmd/gpupack-sim) run
// this same code, so there is one implementation of every policy.
//
// A Policy is a pair of pure functions registered by name: a card cost, which
// chooses cards inside a node, and a node score, which ranks nodes. Place
// searches a node for a placement that the cost prefers; Normalize turns raw
// node scores into the 0..10 the scheduler extender API wants.
//
// It must not depend on client-go, HTTP, or anything with side effects.
package policy
