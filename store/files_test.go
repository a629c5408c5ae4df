package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"tms/manifest"
)

// Small files larger than tms ever writes are refused before they are read, with an error that
// says so.
func TestSmallFilesAreBounded(t *testing.T) {
	ctx := context.Background()
	s := New(newDir(t), Options{})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	id := manifest.BLAKE3.Sum([]byte("v"))
	huge := append([]byte(id.String()+"\n"), bytes.Repeat([]byte(" "), 1<<20)...)
	for _, c := range []struct {
		name, key, names string
		read             func() error
	}{
		{"tag", "refs/lab/latest", "tag lab:latest", func() error { _, err := s.GetTag(ctx, "lab", "latest"); return err }},
		{"stats", statsKey(id), statsKey(id), func() error { _, err := s.GetStats(ctx, id); return err }},
		{"marker", MarkerKey, MarkerKey, func() error { return s.Check(ctx) }},
		{"hold", holdKey(id, "deploy/x"), holdKey(id, "deploy/x"), func() error { _, err := s.Holds(ctx, id); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			old, _ := s.b.Get(ctx, c.key)
			if err := s.b.Put(ctx, c.key, huge); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if old != nil {
					s.b.Put(ctx, c.key, old)
				}
			}()
			err := c.read()
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.names) || !strings.Contains(err.Error(), "more than") && !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("reading a 1 MiB %s = %v; want ErrCorrupt naming %s and its size", c.name, err, c.names)
			}
		})
	}
	// A huge or damaged lock keeps nobody out.
	s.b.Put(ctx, "locks/exclusive-huge.json", append([]byte(`{"kind":"exclusive"}`), bytes.Repeat([]byte(" "), 1<<20)...))
	s.b.Put(ctx, "locks/exclusive-bad.json", []byte(`{"kind":"exclusive","pid":-4}`))
	if l, err := s.LockExclusive(ctx, "gc"); err != nil {
		t.Fatalf("LockExclusive with only damaged locks about: %v", err)
	} else {
		l.Release(ctx)
	}
}

func FuzzLockFile(f *testing.F) {
	good, _ := json.Marshal(LockInfo{Kind: "shared", Purpose: "import of lab:latest", Host: "region-a", PID: 42, Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
	f.Add(good)
	f.Add([]byte(`{"kind":"exclusive","pid":-1}`))
	f.Add([]byte(`{"kind":"shared"} {}`))
	f.Add([]byte(`{"kind":"sh\u0000ared"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		li, err := ParseLock(b)
		if err != nil {
			if len(b) > maxLockFile && !strings.Contains(err.Error(), "more than") {
				t.Fatalf("oversized lock refused for another reason: %v", err)
			}
			return
		}
		if li.Kind != "shared" && li.Kind != "exclusive" || li.PID < 0 || len(li.Host) > 255 || len(li.Purpose) > 1024 {
			t.Fatalf("accepted %+v", li)
		}
		again, _ := json.Marshal(li)
		if back, err := ParseLock(again); err != nil || back.Kind != li.Kind || back.PID != li.PID || back.Purpose != li.Purpose {
			t.Fatalf("a lock tms would write does not read back: %+v, %v", back, err)
		}
	})
}

func FuzzTagFile(f *testing.F) {
	id := manifest.BLAKE3.Sum([]byte("v"))
	f.Add([]byte(id.String() + "\n"))
	f.Add([]byte(id.String()))
	f.Add([]byte(strings.Repeat("0", 64) + "\n"))
	f.Add([]byte(strings.ToUpper(id.String())))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseTag(b)
		if err != nil {
			return
		}
		if len(b) > maxTagFile || got.IsZero() {
			t.Fatalf("accepted %q as %v", b, got)
		}
		if back, err := parseTag([]byte(got.String() + "\n")); err != nil || back != got {
			t.Fatalf("a tag tms would write does not read back: %v, %v", back, err)
		}
	})
}

func FuzzStatsFile(f *testing.F) {
	good, _ := json.Marshal(Stats{StoredBytes: 100, AddedBytes: 10, AddedChunks: 1})
	f.Add(good)
	f.Add([]byte(`{"stored_bytes":-1}`))
	f.Add([]byte(`{"stored_bytes":1,"added_bytes":2}`))
	f.Add([]byte(`{"stored_bytes":1e400}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStats(b)
		if err != nil {
			return
		}
		if len(b) > maxStatsFile || st.StoredBytes < 0 || st.AddedBytes < 0 || st.AddedChunks < 0 || st.AddedBytes > st.StoredBytes {
			t.Fatalf("accepted %q as %+v", b, st)
		}
	})
}

func FuzzHoldFile(f *testing.F) {
	id := manifest.BLAKE3.Sum([]byte("v"))
	h := Hold{Version: id, Holder: "deploy/region-b/lab/classroom/pc-07/0193a1", Until: time.Date(2026, 12, 1, 14, 5, 0, 0, time.UTC), Host: "region-b"}
	good, _ := json.Marshal(h)
	key := holdKey(id, h.Holder)
	f.Add(key, good)
	f.Add(key, []byte(`{"holder":"deploy/x","until":"2026-12-01T14:05:00Z"}`))
	f.Add("holds/x/y.json", good)
	f.Add(key, []byte(`{"version":"`+id.String()+`","holder":"a\u0007","until":"2026-12-01T14:05:00Z"}`))
	f.Add(key, append(good, good...))
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		h, err := ParseHold(key, b)
		if err != nil {
			return
		}
		if len(b) > maxHoldFile || ValidateHolder(h.Holder) != nil || h.Until.IsZero() || key != holdKey(h.Version, h.Holder) {
			t.Fatalf("accepted %q at %q as %+v", b, key, h)
		}
	})
}

func FuzzPinFile(f *testing.F) {
	id := manifest.BLAKE3.Sum([]byte("v"))
	good, _ := json.Marshal(pinFile{Version: id, By: "ana", At: time.Date(2026, 12, 1, 14, 5, 0, 0, time.UTC), Host: "region-b"})
	key := pinKey(id)
	f.Add(key, good)
	f.Add(key, []byte(`{"by":"ana"}`))
	f.Add("pins/x.json", good)
	f.Add(key, []byte(`{"version":"`+id.String()+`","by":"a\u0007"}`))
	f.Add(key, append(good, good...))
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		h, err := ParsePin(key, b)
		if err != nil {
			return
		}
		if len(b) > maxHoldFile || validateBy(h.By) != nil || !h.Pinned || h.Holder != PinHolder || key != pinKey(h.Version) {
			t.Fatalf("accepted %q at %q as %+v", b, key, h)
		}
	})
}
