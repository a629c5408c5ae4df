// Package temporaltest holds helpers for tests that run workflows on a real Temporal server.
package temporaltest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"
)

// SaveHistory writes a workflow run's history to workflows/testdata/NAME.json (and its id to
// NAME.id) when
// TMS_SAVE_HISTORIES is set, for the replay test there. Tests call it from a package directory
// beside workflows/, for example:
//
//	TMS_SAVE_HISTORIES=1 go test ./workers ./devenv
func SaveHistory(t testing.TB, c client.Client, id, runID, name string) {
	t.Helper()
	if os.Getenv("TMS_SAVE_HISTORIES") == "" {
		return
	}
	h := &historypb.History{}
	it := c.GetWorkflowHistory(context.Background(), id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, ev)
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "workflows", "testdata")
	if err := os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	// Workflows that name their children after their own id replay only under that id.
	if err := os.WriteFile(filepath.Join(dir, name+".id"), []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
