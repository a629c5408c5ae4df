package activities

import (
	"context"
	"encoding/json"

	"go.temporal.io/sdk/client"

	"tms/agentwire"
	"tms/state"
)

// AgentProgress is an agent's progress report, the heartbeat details of WaitForAgent.
type AgentProgress = agentwire.Progress

// AgentWaiters tells the WaitForAgent activities of a region what its agents report: progress
// becomes a heartbeat, a finished task completes the activity, through the task token the
// activity recorded. A task without a recorded token is left alone: its activity reads the
// outcome from the database when it starts.
type AgentWaiters struct{ Client client.Client }

// Heartbeat records the task's progress as its waiting activity's heartbeat.
func (w AgentWaiters) Heartbeat(ctx context.Context, t state.Task) error {
	if len(t.Waiter) == 0 {
		return nil
	}
	var p AgentProgress
	if t.Progress != "" {
		if err := json.Unmarshal([]byte(t.Progress), &p); err != nil {
			return err
		}
	}
	return w.Client.RecordActivityHeartbeat(ctx, t.Waiter, p)
}

// Complete completes the task's waiting activity with the task's outcome.
func (w AgentWaiters) Complete(ctx context.Context, t state.Task) error {
	if len(t.Waiter) == 0 {
		return nil
	}
	res, err := TaskOutcome(t)
	if err != nil {
		return w.Client.CompleteActivity(ctx, t.Waiter, nil, err)
	}
	return w.Client.CompleteActivity(ctx, t.Waiter, res, nil)
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
