package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"tms/agentwire"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
)

func TestFramesServesOnlyTheTasksVersion(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	res := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 8), "lab")
	other := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 9), "other")
	nonZero := func(v *store.Version) []manifest.ID {
		var ids []manifest.ID
		for _, id := range v.Manifest.Chunks {
			if !id.IsZero() {
				ids = append(ids, id)
			}
		}
		return ids
	}
	mine, theirs := nonZero(res.Version), nonZero(other.Version)
	r.task(t, "52:54:00:00:00:07", "pc7", "deploy/7", "deploy", res.Version.ID.String())
	_, c := r.boot(t, "52:54:00:00:00:07")
	get := func(ids []manifest.ID) ([][]byte, error) {
		var got [][]byte
		err := c.GetChunkFrames(ctx, ids, func(n int) []byte { return make([]byte, n) }, func(i int, frame []byte) error {
			got = append(got, frame)
			return nil
		})
		return got, err
	}

	// Every chunk, one named twice, in the order asked: the stored frames, as stored.
	ask := append(append([]manifest.ID{}, mine...), mine[0])
	got, err := get(ask)
	if err != nil || len(got) != len(ask) {
		t.Fatalf("%d frames, %v", len(got), err)
	}
	for i, id := range ask {
		stored, err := r.store.Backend().Get(ctx, store.ChunkKey(id))
		if err != nil || !bytes.Equal(stored, got[i]) {
			t.Fatalf("frame %d (%s) is not the stored one: %v", i, id.Short(), err)
		}
	}
	if n := r.value(t, "tms_transfer_bytes_total", "path", "agent", "direction", "out"); n <= 0 {
		t.Errorf("agent bytes out = %v", n)
	}

	// A chunk of another version is refused before anything is sent.
	if _, err := get([]manifest.ID{mine[0], theirs[0]}); status(err) != http.StatusNotFound {
		t.Fatalf("a foreign chunk: %v", err)
	}
	// Too many ids, or none, sent around the client's own check.
	post := func(ids []manifest.ID) int {
		body, _ := json.Marshal(agentwire.FramesRequest{Chunks: ids})
		req, _ := http.NewRequest("POST", r.srv.URL+"/v1/agent/task/frames", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set(agentwire.TerminalHeader, c.MAC)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	many := make([]manifest.ID, agentwire.MaxFramesQuery+1)
	for i := range many {
		many[i] = mine[0]
	}
	if code := post(many); code != http.StatusBadRequest {
		t.Errorf("%d ids: %d", len(many), code)
	}
	if code := post(nil); code != http.StatusBadRequest {
		t.Errorf("no ids: %d", code)
	}
	if code := post(many[:agentwire.MaxFramesQuery]); code != http.StatusOK {
		t.Errorf("%d ids: %d", agentwire.MaxFramesQuery, code)
	}

	// A chunk the store lost after the answer began: the answer ends short, and the agent
	// says so.
	if err := os.Remove(filepath.Join(r.store.Backend().String(), store.ChunkKey(mine[1]))); err != nil {
		t.Fatal(err)
	}
	if _, err := get(mine[:3]); !errors.Is(err, agentwire.ErrFrames) {
		t.Fatalf("a frame lost mid-answer: %v", err)
	}
	// Lost as the first: a plain error answer.
	if _, err := get(mine[1:3]); status(err) != http.StatusNotFound {
		t.Fatalf("a frame lost before the answer: %v", err)
	}
}

func TestFramesNeedADeployOrUpdate(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	res := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 10), "lab")
	r.task(t, "52:54:00:00:00:08", "pc8", "capture/8", "capture", "lab")
	_, c := r.boot(t, "52:54:00:00:00:08")
	var id manifest.ID
	for _, id = range res.Version.Manifest.Chunks {
		if !id.IsZero() {
			break
		}
	}
	err := c.GetChunkFrames(ctx, []manifest.ID{id}, func(n int) []byte { return make([]byte, n) }, func(int, []byte) error { return nil })
	if status(err) != http.StatusForbidden {
		t.Fatalf("frames on a capture: %v", err)
	}
}

// FuzzFramesRequest sends arbitrary bodies to the frames endpoint with a deploy's token: never a
// server error, and an answer holds only chunks of the deployed version, at most
// agentwire.MaxFramesQuery of them.
func FuzzFramesRequest(f *testing.F) {
	const mac = "52:54:00:00:00:0f"
	r := newRegion(f)
	res := storetest.Import(f, r.store, storetest.SampleDisk(f, 4<<20, 16), "lab")
	other := storetest.Import(f, r.store, storetest.SampleDisk(f, 4<<20, 17), "other")
	r.task(f, mac, "pc15", "deploy/15", "deploy", res.Version.ID.String())
	_, c := r.boot(f, mac)
	own := map[manifest.ID]bool{}
	for _, id := range res.Version.Manifest.Chunks {
		if !id.IsZero() {
			own[id] = true
		}
	}
	seed := func(ids ...manifest.ID) {
		b, _ := json.Marshal(agentwire.FramesRequest{Chunks: ids})
		f.Add(b)
	}
	for id := range own {
		seed(id, id)
		break
	}
	seed(other.Version.Manifest.Chunks[0])
	seed(manifest.ID{})
	seed()
	f.Add([]byte(`{"chunks":"x"}`))
	f.Add([]byte(`{"chunks":[1,2]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := http.NewRequest("POST", r.srv.URL+"/v1/agent/task/frames", bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set(agentwire.TerminalHeader, mac)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("body %q: status %d", body, resp.StatusCode)
		}
		if resp.StatusCode != http.StatusOK {
			return
		}
		n := 0
		err = agentwire.ReadBatch(resp.Body, func(id manifest.ID, frame []byte) error {
			if !own[id] {
				t.Fatalf("body %q: chunk %s served, not part of the deployed version", body, id.Short())
			}
			n++
			return nil
		})
		if err != nil || n == 0 || n > agentwire.MaxFramesQuery {
			t.Fatalf("body %q: %d records, %v", body, n, err)
		}
	})
}
