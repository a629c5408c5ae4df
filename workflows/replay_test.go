package workflows

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplayHistories replays histories recorded on a real server (workers' integration test
// and the one-machine tests of devenv, with TMS_SAVE_HISTORIES=1). A change to a workflow that would break running workflows fails
// here; put such a change behind workflow.GetVersion and record new histories beside the old.
func TestReplayHistories(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded histories in testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(ShareImage)
			r.RegisterWorkflow(CaptureImage)
			r.RegisterWorkflow(DeployImage)
			r.RegisterWorkflow(DeployTerminal)
			r.RegisterWorkflow(PowerTerminals)
			r.RegisterWorkflow(UpdateImage)
			r.RegisterWorkflow(UpdateTerminal)
			r.RegisterWorkflow(ConfigureRegion)
			r.RegisterWorkflow(BootEnvRollout)
			r.RegisterWorkflow(PlanImage)
			r.RegisterWorkflow(PlanImageRegion)
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			h, err := client.HistoryFromJSON(bytes.NewReader(b), client.HistoryJSONOptions{})
			if err != nil {
				t.Fatal(err)
			}
			opts := worker.ReplayWorkflowHistoryOptions{}
			if id, err := os.ReadFile(strings.TrimSuffix(f, ".json") + ".id"); err == nil {
				opts.OriginalExecution = workflow.Execution{ID: strings.TrimSpace(string(id)), RunID: "replay"}
			}
			if err := r.ReplayWorkflowHistoryWithOptions(nil, h, opts); err != nil {
				t.Fatal(err)
			}
		})
	}
}
