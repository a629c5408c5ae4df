package miniotest

import "syscall"

// sysProcAttr has the kernel kill the server when the test binary dies, so that a test binary
// killed by a timeout, or one that never calls StopShared, leaves no server running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
