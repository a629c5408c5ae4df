//go:build netboot

package e2e

// childEnv, when set, makes TestNetboot run the scenario: the process is inside the namespace.
const childEnv = "TMS_E2E_CHILD"
