// Command gpupack-device-plugin is the kubelet device plugin of gpupack:
// one per GPU node, as a DaemonSet. See the deviceplugin package.
//
// It wires the device plugin to the real NVML or the simulated one (mock,
// and mock/job's environment for simulated jobs), and maps its flags onto
// the configuration file of deviceplugin/config (a flag set on the command
// line wins), picking the node's file by its label and exiting when that
// changes; it depends on nothing of the extender.
package main
