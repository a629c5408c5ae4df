package agentwire

import (
	"encoding/json"
	"testing"
)

func TestFillBytesReadsOldAgentsMovedBytesByKind(t *testing.T) {
	for _, tt := range []struct {
		name          string
		body          string
		kind          Kind
		sent, fetched int64
	}{
		{"old agent capturing", `{"phase":"reading","done":1,"total":2,"moved_bytes":7}`, KindCapture, 7, 0},
		{"old agent deploying", `{"phase":"writing","done":1,"total":2,"moved_bytes":7}`, KindDeploy, 0, 7},
		{"new agent capturing", `{"phase":"reading","done":1,"total":2,"sent_bytes":5,"moved_bytes":5}`, KindCapture, 5, 0},
		{"new agent deploying", `{"phase":"writing","done":1,"total":2,"fetched_bytes":9,"moved_bytes":9}`, KindDeploy, 0, 9},
		{"nothing moved yet", `{"phase":"starting","done":0,"total":0,"moved_bytes":0}`, KindDeploy, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p Progress
			if err := json.Unmarshal([]byte(tt.body), &p); err != nil {
				t.Fatal(err)
			}
			p.FillBytes(tt.kind)
			if p.SentBytes != tt.sent || p.FetchedBytes != tt.fetched {
				t.Errorf("got sent %d, fetched %d; want %d, %d", p.SentBytes, p.FetchedBytes, tt.sent, tt.fetched)
			}
		})
	}
}
