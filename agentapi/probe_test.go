package agentapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"tms/agentwire"
	"tms/state"
)

// TestProbeReportsTheBootEnv checks a probe's end: the task names the bootenv version its boot
// script chose, a report that is not a version id or carries an overlong release is refused, and
// the agent's bootenv and release are the task's result.
func TestProbeReportsTheBootEnv(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	const mac, v = "52:54:00:00:00:08", "91bc0000000000000000000000000000000000000000000000000000000000aa"
	r.task(t, mac, "pc8", "bootenv-rollout/x@1", agentwire.KindProbe, v)
	rep, c := r.boot(t, mac)
	if rep.Action != agentwire.ActionProbe {
		t.Fatalf("boot reply %+v", rep)
	}
	ti, err := c.Task(ctx)
	if err != nil || ti.Kind != agentwire.KindProbe || ti.Version != v {
		t.Fatalf("task %+v, %v", ti, err)
	}
	for _, d := range []agentwire.Done{{BootEnv: "not-a-version"}, {BootEnv: v, AgentVersion: strings.Repeat("x", agentwire.MaxAgentVersion+1)}} {
		if _, err := c.Done(ctx, d); status(err) != http.StatusBadRequest {
			t.Fatalf("probe report %+.60v: %v", d, err)
		}
	}
	res, err := c.Done(ctx, agentwire.Done{BootEnv: v, AgentVersion: "v2.1"})
	if err != nil || res.BootEnv != v || res.AgentVersion != "v2.1" {
		t.Fatalf("probe done: %+v, %v", res, err)
	}
	task, _ := r.inv.Task(ctx, "bootenv-rollout/x@1")
	if task.State != state.TaskDone || !strings.Contains(task.Result, `"bootenv":"`+v) || !strings.Contains(task.Result, `"agent_version":"v2.1"`) {
		t.Fatalf("task after the probe: %+v", task)
	}
}
