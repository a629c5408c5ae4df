// Package e2e holds tms's end-to-end tests: a whole lab on one machine, with QEMU terminals
// that network boot from a region. They need root, QEMU and Debian's kernel and iPXE, and run
// only with the build tag netboot (scripts/test-netboot):
//
//	go test -tags netboot -count=1 -v -timeout 30m ./e2e/
//
// Design. The classroom segment is a network namespace the test creates (tmse2e-PID): a bridge
// br0 with the region's address 10.99.0.1/24 and two tap devices, tap0 and tap1, one per VM.
// Nothing leaves the namespace, and it is deleted when the test ends (and, at the next run, if a
// killed run left it behind). The test binary then runs itself again inside the namespace
// (`ip netns exec tmse2e-PID <test binary> -test.run ...` with TMS_E2E_CHILD set), and that
// child runs the whole scenario: the in-process Temporal server, central, the region with its
// boot service on br0, the workflows, and QEMU, which opens its tap there. Running everything in
// one process inside the namespace avoids moving goroutines between namespaces (setns acts on
// one OS thread only) and lets the test's Temporal client reach a frontend that listens on the
// namespace's loopback. The parent only builds the in-memory OS, sets the namespace up, waits
// for the child and tears the namespace down.
package e2e
