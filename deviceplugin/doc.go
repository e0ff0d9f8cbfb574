// Package deviceplugin is gpupack's kubelet device plugin (v1beta1): it
// advertises each card's memory as aliyun.com/gpu-mem fake devices (one per
// memory unit, ids "<GPU-UUID>-_-<j>"), streams card health (recorded as
// events on the node, and published in its inventory, retried with
// backoff), steers the kubelet to the card the extender chose, and answers
// Allocate with the container's cards and limits, plus the mounts and
// environment Options add to every container (simulated cards' state). See
// README.md for the Allocate protocol.
//
// It reads cards through package nvml (real or mock) and pods through a
// small PodSource; it must not depend on the extender.
//
// # Vocabulary
//
// The code and README.md use these words in these senses only:
//
//   - A plan is the extender's decision for one GPU container of a pod bound
//     to this node: the units it is to get on each card. It is read from the
//     pod's allocation annotation, or from gpupack.io/planned-allocation once
//     reconciliation has rewritten the allocation. Only pods in play (not
//     ended, not being deleted) have plans that count; the node's plans are
//     those of its pods in play.
//   - A container holds the cards and units its fake devices name, once the
//     kubelet has given them to it. What containers hold is what the
//     kubelet says (its PodResources API) or, without that API, what this
//     plugin remembers serving (holdings).
//   - A plan waits while no container holds it. What waits is the node's
//     plans less one plan for each container that holds devices (the rule
//     is at waitingPlans).
//   - Allocate serves a container from the waiting plan equal to its
//     devices: it answers with that plan's environment.
//   - A pod has drifted when one of its containers holds cards that no plan
//     names, or only plans other containers hold (the kubelet gave them
//     without this plugin, as after a node reboot or a card swap).
//   - Reconciliation rewrites a pod's allocation annotation to what its
//     containers hold, keeping the plan in gpupack.io/planned-allocation.
package deviceplugin
