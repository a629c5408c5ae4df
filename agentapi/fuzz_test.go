package agentapi_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"tms/agent"
	"tms/internal/storetest"
	"tms/manifest"
)

// FuzzAgentRequests sends arbitrary bodies, with a valid token, to every agent endpoint that
// parses one. The region must answer each with a client error or success, never fail inside
// or crash, and must still serve the task afterwards.
func FuzzAgentRequests(f *testing.F) {
	f.Add(uint8(0), []byte(`{"mac":"52:54:00:00:00:09","disk_size":1}`))
	f.Add(uint8(1), []byte(`{"chunks":["`+manifest.BLAKE3.Sum([]byte("x")).String()+`"]}`))
	f.Add(uint8(2), agent.AppendBatch(nil, manifest.BLAKE3.Sum([]byte("x")), []byte("not zstd")))
	f.Add(uint8(3), []byte(`{"format":"tms.manifest/1"}`))
	f.Add(uint8(4), []byte(`{"phase":"reading","done":1,"total":2}`))
	f.Add(uint8(5), []byte(`{"error":""}`))
	f.Add(uint8(1), []byte(`{"chunks":[`))
	f.Add(uint8(4), []byte(`{"phase":"reading","done":-1,"total":-2}`))
	r := newRegion(f)
	storetest.Import(f, r.store, storetest.SampleDisk(f, 4<<20, 1), "lab")
	r.task(f, "52:54:00:00:00:09", "pc9", "capture/9", "capture", "lab")
	_, c := r.boot(f, "52:54:00:00:00:09")
	endpoints := []struct{ method, path string }{
		{"POST", "/v1/agent/boot"},
		{"POST", "/v1/agent/task/missing"},
		{"POST", "/v1/agent/task/chunks"},
		{"PUT", "/v1/agent/task/manifest"},
		{"POST", "/v1/agent/task/progress"},
		{"POST", "/v1/agent/task/done"},
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		ep := endpoints[int(which)%len(endpoints)]
		if ep.path == "/v1/agent/task/done" || ep.path == "/v1/agent/task/manifest" || ep.path == "/v1/agent/boot" {
			// These end the task or mint a new token; keep the task open for the next input
			// by sending the body to the parser only when it cannot be a valid request.
			if bytes.Contains(body, []byte("error")) || bytes.Contains(body, []byte("chunks")) || bytes.Contains(body, []byte("mac")) {
				return
			}
		}
		req, _ := http.NewRequestWithContext(context.Background(), ep.method, r.srv.URL+ep.path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set(agent.TerminalHeader, c.MAC)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s with %q: status %d", ep.method, ep.path, body, resp.StatusCode)
		}
	})
}
