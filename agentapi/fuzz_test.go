package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"tms/agentwire"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/state"
)

// FuzzAgentRequests sends arbitrary bodies, with a valid token, to every agent endpoint that
// parses one. The region must answer each with a client error or success, never fail inside
// or crash, and must still serve the task afterwards.
func FuzzAgentRequests(f *testing.F) {
	f.Add(uint8(0), []byte(`{"mac":"52:54:00:00:00:09","disk_size":1}`))
	f.Add(uint8(1), []byte(`{"chunks":["`+manifest.BLAKE3.Sum([]byte("x")).String()+`"]}`))
	f.Add(uint8(2), agentwire.AppendBatch(nil, manifest.BLAKE3.Sum([]byte("x")), []byte("not zstd")))
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
		req.Header.Set(agentwire.TerminalHeader, c.MAC)
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

// FuzzBootRequest sends arbitrary boot request bodies naming a terminal with a task, unsigned
// and signed with its key, as anything on the network can: never a server error, never a task
// for an unsigned request, and nothing an unsigned request says is recorded.
func FuzzBootRequest(f *testing.F) {
	const mac = "52:54:00:00:00:0b"
	f.Add([]byte(`{"mac":"`+mac+`","disk":"/dev/sda","disk_size":1}`), false)
	f.Add([]byte(`{"mac":"`+mac+`","disk_size":-1,"boot_token":"x"}`), true)
	f.Add([]byte(`{"mac":"`+mac+`","disk_size":9007199254740993}`), true)
	f.Add([]byte(`{"mac":"52:54:00:00:00:0c"}`), true)
	f.Add([]byte(`{"mac":`), false)
	r := newRegion(f)
	ctx := context.Background()
	r.task(f, mac, "pc11", "capture/11", "capture", "lab")
	if err := r.inv.SetDisk(ctx, mac, "/dev/sda", 64<<30); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, sign bool) {
		req, _ := http.NewRequestWithContext(ctx, "POST", r.srv.URL+"/v1/agent/boot", bytes.NewReader(body))
		if sign {
			agentwire.SignRequest(req, mac, r.keys[mac], body, time.Now())
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var rep agentwire.BootReply
		json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("body %q: status %d", body, resp.StatusCode)
		}
		if !sign && (rep.Token != "" || rep.Action != "" && rep.Action != "local") {
			t.Fatalf("an unsigned boot request %q got %+v", body, rep)
		}
		if !sign {
			if term, _ := r.inv.Terminal(ctx, mac); term.DiskSize != 64<<30 {
				t.Fatalf("an unsigned boot request %q set the disk size to %d", body, term.DiskSize)
			}
		}
		if sign {
			// A signed boot may change the disk; put it back for the next input.
			r.inv.SetDisk(ctx, mac, "/dev/sda", 64<<30)
		}
	})
}

// FuzzCommands sends arbitrary queries and Authorization headers to the command poll: never a
// server error, and never a command without the terminal's signature.
func FuzzCommands(f *testing.F) {
	const mac = "52:54:00:00:00:0d"
	f.Add("mac="+mac+"&wait=0s", "")
	f.Add("mac="+mac+"&wait=-1s", "Bearer x")
	f.Add("wait=1h", agentwire.KeyScheme+" mac="+mac+", ts=1, nonce=AAAAAAAAAAAAAAAA, sig=AAAA")
	f.Add("mac=nope", agentwire.KeyScheme+" mac=nope")
	r := newRegion(f)
	r.enroll(f, mac, "pc13")
	f.Fuzz(func(t *testing.T, query, auth string) {
		r.api.Send(mac, "reboot")
		req, err := http.NewRequest("GET", r.srv.URL+"/v1/agent/commands?"+query, nil)
		if err != nil {
			return
		}
		if auth != "" {
			req.Header["Authorization"] = []string{auth}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // a query Go's client will not send
		}
		var cmd agentwire.CommandReply
		json.NewDecoder(resp.Body).Decode(&cmd)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("query %q, auth %q: status %d", query, auth, resp.StatusCode)
		}
		if resp.StatusCode == http.StatusOK || cmd.Command != "" {
			t.Fatalf("query %q, auth %q took a command without the terminal's signature: %d %+v", query, auth, resp.StatusCode, cmd)
		}
	})
}

// FuzzChunkPath asks for arbitrary chunk names with a deploy's token: never a server error, and
// only the chunks of the deployed version are served.
func FuzzChunkPath(f *testing.F) {
	const mac = "52:54:00:00:00:0e"
	r := newRegion(f)
	res := storetest.Import(f, r.store, storetest.SampleDisk(f, 4<<20, 14), "lab")
	other := storetest.Import(f, r.store, storetest.SampleDisk(f, 4<<20, 15), "other")
	r.task(f, mac, "pc14", "deploy/14", "deploy", res.Version.ID.String())
	_, c := r.boot(f, mac)
	own := map[string]bool{}
	for _, id := range res.Version.Manifest.Chunks {
		own[id.String()] = true
		f.Add(id.String())
	}
	for _, id := range other.Version.Manifest.Chunks[:2] {
		f.Add(id.String())
	}
	f.Add("..%2F..%2Fmanifests")
	f.Add(strings.Repeat("0", 64))
	f.Add("zz")
	f.Add("..")
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	f.Fuzz(func(t *testing.T, name string) {
		req, err := http.NewRequest("GET", r.srv.URL+"/v1/agent/task/chunks/"+name, nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set(agentwire.TerminalHeader, mac)
		resp, err := noRedirects.Do(req)
		if err != nil {
			return
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("chunk %q: status %d", name, resp.StatusCode)
		}
		// A name the mux cleans into another path (.., %2F) is redirected, not served.
		if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "application/zstd" && (!own[strings.ToLower(name)] || name == strings.Repeat("0", 64)) {
			t.Fatalf("chunk %q served: not part of the deployed version", name)
		}
	})
}

// FuzzHelloRequests sends arbitrary bodies, signed with a terminal's agent key, to the agent
// service's hello and disk check: the region answers each with a client error or success,
// never a failure of its own, and never forgets a version for a check that is not valid.
func FuzzHelloRequests(f *testing.F) {
	f.Add(false, []byte(`{"mac":"52:54:00:00:00:0a","disk_size":4194304}`))
	f.Add(false, []byte(`{"mac":"52:54:00:00:00:0b","disk_size":-1}`))
	f.Add(true, []byte(`{"version":"00","mismatch":[0]}`))
	f.Add(true, []byte(`{"version":"","error":"x"}`))
	f.Add(true, []byte(`{"mismatch":[1,2,3,4,5,6,7,8,9]}`))
	r := newRegion(f)
	imp := storetest.Import(f, r.store, storetest.SampleDisk(f, 4<<20, 1), "lab")
	r.enroll(f, "52:54:00:00:00:0a", "pc10")
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, check bool, body []byte) {
		if err := r.inv.SetVersion(ctx, "52:54:00:00:00:0a", imp.Version.ID); err != nil {
			t.Fatal(err)
		}
		path := "/v1/agent/hello"
		if check {
			path = "/v1/agent/hello/check"
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", r.srv.URL+path, bytes.NewReader(body))
		agentwire.SignRequest(req, "52:54:00:00:00:0a", r.keys["52:54:00:00:00:0a"], body, time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("POST %s with %q: status %d", path, body, resp.StatusCode)
		}
		var c agentwire.DiskCheck
		valid := json.Unmarshal(body, &c) == nil && c.Validate() == nil && c.Version == imp.Version.ID.String() &&
			(len(c.Mismatch) > 0 || c.Error != "")
		tm, err := r.inv.Terminal(ctx, "pc10")
		if err != nil {
			t.Fatal(err)
		}
		if check && tm.Version.IsZero() && !valid {
			t.Fatalf("%q made the region forget the version", body)
		}
	})
}

// FuzzEnroll sends arbitrary bodies to the enrollment endpoint: never a failure of the
// region's own, and never a key without the token.
func FuzzEnroll(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:00:00:0c","token":"tms-enroll-x"}`))
	f.Add([]byte(`{"mac":"nope","token":""}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:0c","token":"` + strings.Repeat("x", 200) + `"}`))
	r := newRegion(f)
	if err := r.inv.Enroll(context.Background(), "52:54:00:00:00:0c", "pc12"); err != nil {
		f.Fatal(err)
	}
	_, hash := state.NewEnrollToken()
	if err := r.inv.AddEnrollToken(context.Background(), state.EnrollToken{Hash: hash, Expires: time.Now().Add(time.Hour)}, time.Now()); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, err := http.Post(r.srv.URL+"/v1/agent/enroll", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("%q: status %d", body, resp.StatusCode)
		}
	})
}
