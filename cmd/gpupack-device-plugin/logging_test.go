package main

import logsapi "k8s.io/component-base/logs/api/v1"

// The tests run the command many times in one process: the same logging
// configuration, applied again, is no error here (a process of its own
// applies it once).
func init() { logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged }
