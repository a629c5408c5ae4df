package agentapi_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/agentwire"
	"tms/internal/sampledisk"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/state"
)

// updateTask sets up an update of terminal mac from base to version, both signed, as
// PrepareTask does.
func (r *region) updateTask(t *testing.T, mac, name, id string, version, base manifest.ID) {
	t.Helper()
	ctx := context.Background()
	r.enroll(t, mac, name)
	for _, v := range []manifest.ID{version, base} {
		if err := r.store.PutSignature(ctx, v, r.key.SignVersion(v)); err != nil {
			t.Fatal(err)
		}
	}
	task := state.Task{ID: id, MAC: mac, Kind: agentwire.KindUpdate, Version: version.String(), Base: base.String()}
	if _, err := r.inv.StartTask(ctx, task, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := r.inv.SetBootAction(ctx, mac, bootActionOf(task, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateWritesOnlyChangedChunks runs an update through the real agent: it reads both
// manifests, fetches and writes only the chunks that differ, reads them back, and reports what
// it fetched and wrote; the terminal's recorded version is forgotten as soon as the agent reads
// the task (FinishTask records the new one).
func TestUpdateWritesOnlyChangedChunks(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	src := storetest.SampleDisk(t, 8<<20, 31)
	v1 := storetest.Import(t, r.store, src, "lab").Version
	dst := filepath.Join(t.TempDir(), "pc3.raw")
	b, _ := os.ReadFile(src)
	os.WriteFile(dst, b, 0o644)
	if _, err := sampledisk.Mutate(src, 0.003, 5); err != nil {
		t.Fatal(err)
	}
	v2 := storetest.Import(t, r.store, src, "lab").Version
	changed, changedBytes := 0, int64(0)
	for i := range v2.Manifest.Chunks {
		if v1.Manifest.Chunks[i] != v2.Manifest.Chunks[i] {
			changed++
			_, n := v2.Manifest.ChunkRange(i)
			changedBytes += n
		}
	}
	if changed == 0 || changed == len(v2.Manifest.Chunks) {
		t.Fatalf("%d of %d chunks changed: the test needs some, not all", changed, len(v2.Manifest.Chunks))
	}

	const mac = "52:54:00:00:00:03"
	r.updateTask(t, mac, "pc3", "update/1", v2.ID, v1.ID)
	if err := r.inv.SetVersion(ctx, mac, v1.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.agent(mac, dst).Run(ctx); err != nil {
		t.Fatal(err)
	}
	task, err := r.inv.Task(ctx, "update/1")
	var res agentwire.Result
	json.Unmarshal([]byte(task.Result), &res)
	if err != nil || task.State != state.TaskDone || !res.Verified {
		t.Fatalf("update task: %+v, %v", task, err)
	}
	if res.Written != int64(changed) || res.WrittenBytes != changedBytes || res.FetchedBytes != changedBytes || res.Version != v2.ID.String() {
		t.Fatalf("result %+v; want %d chunks, %d bytes written and fetched", res, changed, changedBytes)
	}
	if storetest.FileSum(t, dst) != storetest.FileSum(t, src) {
		t.Fatal("the updated disk differs from version 2")
	}
	if term, _ := r.inv.Terminal(ctx, mac); !term.Version.IsZero() {
		t.Fatalf("the terminal is still recorded as holding %s while its update runs", term.Version.Short())
	}
}

// TestUpdateWithUnusableBaseWritesNothing: a base the region does not hold, and a base of
// another geometry, fail the task permanently with a reason, before a byte is written.
func TestUpdateWithUnusableBaseWritesNothing(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	src := storetest.SampleDisk(t, 8<<20, 32)
	v := storetest.Import(t, r.store, src, "lab").Version
	other := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 33), "other").Version
	dst := filepath.Join(t.TempDir(), "pc4.raw")
	os.WriteFile(dst, nil, 0o644)
	os.Truncate(dst, 8<<20)
	before := storetest.FileSum(t, dst)
	for i, tc := range []struct {
		name string
		base manifest.ID
		want string
	}{
		{"base not in the region's store", manifest.BLAKE3.Sum([]byte("gone")), "has no manifest"},
		{"base of another geometry", other.ID, "chunks of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const mac = "52:54:00:00:00:04"
			id := "update/bad/" + string(rune('a'+i))
			if tc.base != other.ID {
				// The signature of a version the store lacks cannot be stored: set the task up by hand.
				r.enroll(t, mac, "pc4")
				r.store.PutSignature(ctx, v.ID, r.key.SignVersion(v.ID))
				task := state.Task{ID: id, MAC: mac, Kind: agentwire.KindUpdate, Version: v.ID.String(), Base: tc.base.String()}
				if _, err := r.inv.StartTask(ctx, task, time.Now()); err != nil {
					t.Fatal(err)
				}
				r.inv.SetBootAction(ctx, mac, bootActionOf(task, time.Now().Add(time.Hour)))
			} else {
				r.updateTask(t, mac, "pc4", id, v.ID, tc.base)
			}
			r.agent(mac, dst).Run(ctx)
			task, _ := r.inv.Task(ctx, id)
			if task.State != state.TaskFailed || !strings.Contains(task.Error, "cannot be used for an update") || !strings.Contains(task.Error, tc.want) {
				t.Fatalf("task %+v: want failed, saying %q", task, tc.want)
			}
			if storetest.FileSum(t, dst) != before {
				t.Fatal("the disk was written")
			}
		})
	}
}

// TestBaseManifestOnlyForUpdates: the base endpoint answers an update's token with the base's
// manifest and refuses a deploy's.
func TestBaseManifestOnlyForUpdates(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	v := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 34), "lab").Version
	r.task(t, "52:54:00:00:00:05", "pc5", "deploy/5", "deploy", v.ID.String())
	_, c := r.boot(t, "52:54:00:00:00:05")
	if _, err := c.GetBaseManifestBytes(ctx); status(err) != 403 {
		t.Fatalf("base manifest with a deploy's token: %v, want 403", err)
	}
	r.updateTask(t, "52:54:00:00:00:06", "pc6", "update/6", v.ID, v.ID)
	_, c = r.boot(t, "52:54:00:00:00:06")
	b, err := c.GetBaseManifestBytes(ctx)
	if err != nil || manifest.VersionID(v.Manifest.Hash, b) != v.ID {
		t.Fatalf("base manifest: %d bytes, %v", len(b), err)
	}
	ti, err := c.Task(ctx)
	if err != nil || ti.Base != v.ID.String() || len(ti.BaseSignature) == 0 || ti.Kind != agentwire.KindUpdate {
		t.Fatalf("update task info: %+v, %v", ti, err)
	}
}

// TestUpdateTokenReadsOnlyTheTargetsChunks: an update's token opens the chunks of the version it
// writes, not those only its base (or another version) names.
func TestUpdateTokenReadsOnlyTheTargetsChunks(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	src := storetest.SampleDisk(t, 4<<20, 35)
	v1 := storetest.Import(t, r.store, src, "lab").Version
	if _, err := sampledisk.Mutate(src, 0.01, 6); err != nil {
		t.Fatal(err)
	}
	v2 := storetest.Import(t, r.store, src, "lab").Version
	r.updateTask(t, "52:54:00:00:00:07", "pc7", "update/7", v2.ID, v1.ID)
	_, c := r.boot(t, "52:54:00:00:00:07")
	inTarget := map[manifest.ID]bool{}
	for _, id := range v2.Manifest.Chunks {
		inTarget[id] = true
	}
	served, refused := 0, 0
	for i, id := range v1.Manifest.Chunks {
		if id.IsZero() {
			continue
		}
		_, err := c.GetChunkFrame(ctx, id)
		switch {
		case inTarget[id] && err == nil:
			served++
		case !inTarget[id] && status(err) == 404:
			refused++
		default:
			t.Fatalf("chunk %d (%s, in the target: %v): %v", i, id.Short(), inTarget[id], err)
		}
	}
	if served == 0 || refused == 0 {
		t.Fatalf("%d base chunks served, %d refused: the test needs both", served, refused)
	}
}
