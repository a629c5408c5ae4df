package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"

	"tms/activities"
	"tms/transfer"
	"tms/workflows"
)

func TestHeartbeatDecodesAgentAndTransferReports(t *testing.T) {
	dc := converter.GetDefaultDataConverter()
	for _, tc := range []struct {
		name, activity string
		details        any
		want           string
	}{
		{"agent report", "WaitForAgent", activities.AgentProgress{Phase: "uploading", Done: 1 << 30, Total: 4 << 30}, "uploading 25.0% (1.0 GiB / 4.0 GiB)"},
		{"agent report before the disk size is known", "WaitForAgent", activities.AgentProgress{Phase: "reading"}, "reading"},
		{"transfer position", "PullFromPeer", transfer.Progress{Done: 50, Total: 200, MovedBytes: 3 << 20}, "25.0% (50/200 chunks), 3.0 MiB moved"},
		{"other activity", "PrepareTask", map[string]int{"x": 1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := dc.ToPayloads(tc.details)
			if err != nil {
				t.Fatal(err)
			}
			raw, got := heartbeat(tc.activity, p)
			if got != tc.want || len(raw) == 0 {
				t.Fatalf("heartbeat(%s) = %s, %q; want %q", tc.activity, raw, got, tc.want)
			}
		})
	}
	if raw, s := heartbeat("WaitForAgent", nil); raw != nil || s != "" {
		t.Fatalf("no heartbeat yet: %s %q", raw, s)
	}
}

func TestDeployProgressLineAddsUpTerminals(t *testing.T) {
	js := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	d := &taskDetail{Type: "DeployImage", Status: "Running", Progress: js(workflows.DeployProgress{Phase: "deploying", Terminals: []workflows.TerminalProgress{
		{Name: "pc1", Phase: "deploying"}, {Name: "pc2", Phase: "deploying"}, {Name: "pc3", Phase: "failed"}, {Name: "pc4", Phase: "queued"}}})}
	for _, done := range []int64{1 << 30, 3 << 30} {
		d.children = append(d.children, &taskDetail{Type: "DeployTerminal", Pending: []pendingActivity{
			{Type: "WaitForAgent", Progress: js(activities.AgentProgress{Phase: "writing", Done: done, Total: 4 << 30})}}})
	}
	got := d.progressLine()
	for _, want := range []string{"deploy: deploying (4 terminals: 0 done, 1 failed, 2 deploying, 1 queued)", "2 terminal(s) reporting 50.0% (4.0 GiB / 8.0 GiB)"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress line %q lacks %q", got, want)
		}
	}
}

func TestRoundDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Minute: "1m", 2 * time.Second: "2s", 90 * time.Second: "1m30s", time.Hour: "1h"} {
		if got := roundDuration(d); got != want {
			t.Errorf("roundDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
