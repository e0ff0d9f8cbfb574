// Command pause is the process of the test nodes' pod sandbox image. As PID 1
// of each sandbox it reaps the zombies re-parented to it, and it exits 0 on
// SIGINT or SIGTERM. Build it static: CGO_ENABLED=0 go build ./cmd/pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// Separate from stop, so that a pending SIGCHLD never makes a SIGTERM
	// dropped: the signal package drops what a full channel cannot take.
	child := make(chan os.Signal, 1)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-child:
			reap()
		}
	}
}

// reap waits for every child that has exited, without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 {
			return
		}
	}
}
