package agentapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"tms/agent"
	"tms/agentwire"
	"tms/internal/storetest"
	"tms/state"
	"tms/swarm"
)

// swarmRegion is a region with a tracker, a version of n distinct chunks, and deploy tasks of
// it for the terminals named.
func swarmRegion(t testing.TB, macs ...string) (*region, string, int) {
	r := newRegion(t)
	r.api.Swarm = swarm.NewTracker(swarm.Options{})
	res := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 3), "lab")
	v := res.Version.ID.String()
	for i, mac := range macs {
		r.task(t, mac, "pc"+string(rune('a'+i)), "deploy/"+mac, "deploy", v)
	}
	return r, v, len(swarm.Chunks(res.Version.Manifest))
}

func TestTaskSaysSwarmOnlyWhenSeveralWrite(t *testing.T) {
	ctx := context.Background()
	r, _, _ := swarmRegion(t, "52:54:00:00:30:01")
	_, c := r.boot(t, "52:54:00:00:30:01")
	ti, err := c.Task(ctx)
	if err != nil || ti.Swarm {
		t.Fatalf("a lone deploy: swarm %v, %v", ti.Swarm, err)
	}
	// The first of a classroom to ask, before its classmates' tasks are set up: its workflow
	// said how many terminals the deploy writes at once.
	const first = "52:54:00:00:30:04"
	r1, v1, _ := swarmRegion(t, first)
	if _, err := r1.inv.StartTask(ctx, state.Task{ID: "deploy/" + first, MAC: first, Kind: agentwire.KindDeploy, Version: v1, Writers: 30}, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, c = r1.boot(t, first)
	if ti, err = c.Task(ctx); err != nil || !ti.Swarm {
		t.Fatalf("the first of 30 writers: swarm %v, %v", ti.Swarm, err)
	}
	r2, v, _ := swarmRegion(t, "52:54:00:00:30:02", "52:54:00:00:30:03")
	_, c = r2.boot(t, "52:54:00:00:30:02")
	if ti, err = c.Task(ctx); err != nil || !ti.Swarm || ti.Version != v {
		t.Fatalf("two deploys of one version: %+v, %v", ti, err)
	}
	r2.api.Swarm = nil
	if ti, err = c.Task(ctx); err != nil || ti.Swarm {
		t.Fatalf("a region without a tracker: swarm %v, %v", ti.Swarm, err)
	}
}

func TestSwarmCallIsChecked(t *testing.T) {
	ctx := context.Background()
	r, _, n := swarmRegion(t, "52:54:00:00:31:01", "52:54:00:00:31:02")
	_, c := r.boot(t, "52:54:00:00:31:01")
	good := agentwire.SwarmRequest{Port: 7000, Key: make([]byte, 32), Have: swarm.NewBitmap(n), Want: 4}
	rep, err := c.Swarm(ctx, good)
	if err != nil || len(rep.Assign) == 0 || rep.Token == "" || len(rep.Keys) == 0 {
		t.Fatalf("a good call: %+v, %v", rep, err)
	}
	tok, err := swarm.VerifyToken(rep.Keys, rep.Token, time.Now())
	if err != nil || tok.Member != "deploy/52:54:00:00:31:01" || tok.IP.String() != "127.0.0.1" {
		t.Fatalf("token %+v: %v", tok, err)
	}
	for name, edit := range map[string]func(*agentwire.SwarmRequest){
		"no port":       func(q *agentwire.SwarmRequest) { q.Port = 0 },
		"short key":     func(q *agentwire.SwarmRequest) { q.Key = q.Key[:5] },
		"short bitmap":  func(q *agentwire.SwarmRequest) { q.Have = nil },
		"want too many": func(q *agentwire.SwarmRequest) { q.Want = agentwire.MaxSwarmWant + 1 },
		"failure past the chunks": func(q *agentwire.SwarmRequest) {
			q.Failed = []agentwire.SwarmFailure{{Chunk: n}}
		},
	} {
		q := good
		q.Have = append(swarm.Bitmap(nil), good.Have...)
		edit(&q)
		if _, err := c.Swarm(ctx, q); status(err) != http.StatusBadRequest {
			t.Errorf("%s: %v, want 400", name, err)
		}
	}
	// A capture's token opens no swarm.
	r.task(t, "52:54:00:00:31:09", "cap", "capture/9", "capture", "lab")
	_, cc := r.boot(t, "52:54:00:00:31:09")
	if _, err := cc.Swarm(ctx, good); status(err) != http.StatusForbidden {
		t.Errorf("a capture's call: %v, want 403", err)
	}
	// Without a token, nothing.
	anon := &agent.Client{Region: r.url, MAC: "52:54:00:00:31:01"}
	if _, err := anon.Swarm(ctx, good); status(err) != http.StatusUnauthorized {
		t.Errorf("a call without a token: %v, want 401", err)
	}
}

// FuzzSwarmRequest sends arbitrary bodies to the tracker with a deploy's token: never a server
// error, and what it assigns is always a chunk of the version.
func FuzzSwarmRequest(f *testing.F) {
	r, _, n := swarmRegion(f, "52:54:00:00:32:01", "52:54:00:00:32:02")
	_, c := r.boot(f, "52:54:00:00:32:01")
	have := base64.StdEncoding.EncodeToString(swarm.NewBitmap(n))
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	f.Add([]byte(`{"port":7000,"key":"` + key + `","have":"` + have + `","want":4}`))
	f.Add([]byte(`{"port":7000,"key":"` + key + `","have":"` + have + `","want":4,"failed":[{"chunk":1,"peer":"x","bad":true}]}`))
	f.Add([]byte(`{"port":7000,"key":"` + key + `","have":"` + have + `","done":true}`))
	f.Add([]byte(`{"port":-1}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", r.srv.URL+"/v1/agent/task/swarm", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set(agentwire.TerminalHeader, c.MAC)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%q: status %d", body, resp.StatusCode)
		}
		if resp.StatusCode != http.StatusOK {
			return
		}
		var rep agentwire.SwarmReply
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			t.Fatal(err)
		}
		for _, a := range rep.Assign {
			if a.Chunk < 0 || a.Chunk >= n || a.Peer != "" && !strings.HasPrefix(a.Peer, "deploy/") {
				t.Fatalf("assigned %+v for a version of %d chunks", a, n)
			}
		}
	})
}
