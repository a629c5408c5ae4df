package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"tms/manifest"
)

// testPack builds a pack of the given frames as a packWriter would.
func testPack(frames ...string) []byte {
	b := []byte(packMagic)
	var entries []packEntry
	for _, f := range frames {
		entries = append(entries, packEntry{id: manifest.BLAKE3.Sum([]byte(f)), off: int64(len(b)), n: uint32(len(f)), crc: frameCRC([]byte(f))})
		b = append(b, f...)
	}
	return appendPackIndex(b, entries, int64(len(b)))
}

func TestParsePack(t *testing.T) {
	good := testPack("one frame", "another, longer frame", "3")
	for _, tc := range []struct {
		name  string
		pack  []byte
		valid bool
	}{
		{"well-formed", good, true},
		{"one frame", testPack("x"), true},
		{"empty", nil, false},
		{"header only", []byte(packMagic), false},
		{"no entries", appendPackIndex([]byte(packMagic), nil, int64(len(packMagic))), false},
		{"truncated by a byte", good[:len(good)-1], false},
		{"truncated to the frames", good[:len(packMagic)+9], false},
		{"a byte more", append(bytes.Clone(good), 0), false},
		{"flipped frame byte", flipped(good, len(packMagic)+2), false},
		{"flipped index byte", flipped(good, len(good)-packTrailerSize-packEntrySize+33), false},
		{"flipped trailer byte", flipped(good, len(good)-packTrailerSize+1), false},
		{"wrong magic", flipped(good, 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := parsePack(tc.pack)
			if tc.valid != (err == nil) {
				t.Fatalf("parse: %v, want valid=%v", err, tc.valid)
			}
			if err != nil && !errors.Is(err, errPackFormat) {
				t.Fatalf("error %v is not errPackFormat", err)
			}
			if tc.valid && len(entries) == 0 {
				t.Fatal("no entries")
			}
		})
	}
}

func flipped(b []byte, at int) []byte {
	b = bytes.Clone(b)
	b[at] ^= 0x20
	return b
}

// FuzzParsePack feeds the pack parser arbitrary bytes: it must not panic, must bound what it
// accepts, and what it accepts must be exactly what a writer would have written.
func FuzzParsePack(f *testing.F) {
	f.Add(testPack("one frame", "another, longer frame", "3"))
	f.Add(testPack("x"))
	f.Add([]byte(packMagic))
	f.Add([]byte{})
	good := testPack("abc", "defgh")
	f.Add(good[:len(good)-5])
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := parsePack(b)
		if err != nil {
			if !errors.Is(err, errPackFormat) {
				t.Fatalf("error %v is not errPackFormat", err)
			}
			return
		}
		if len(entries) == 0 || len(entries) > maxPackEntries {
			t.Fatalf("%d entries accepted", len(entries))
		}
		end := int64(packHeaderSize)
		for _, e := range entries {
			if e.off != end || e.n == 0 || e.n > maxPackFrame {
				t.Fatalf("entry %+v accepted at %d", e, end)
			}
			end += int64(e.n)
		}
		rebuilt := appendPackIndex(bytes.Clone(b[:end]), entries, end)
		if !bytes.Equal(rebuilt, b) {
			t.Fatalf("accepted a pack that a writer would not write:\n%x\n%x", b, rebuilt)
		}
	})
}

func TestBatchSplitsLargePacks(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		bytes          int64
		entries, packs int
	}{
		{"at the entry limit", 0, 3, 4},
		{"at the size limit", 10, 0, 10},
		{"under both", 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDirWith(filepath.Join(t.TempDir(), "s"), DirOptions{Packs: true})
			if err != nil {
				t.Fatal(err)
			}
			d.rotateBytes, d.rotateEntries = tc.bytes, tc.entries
			s := New(d, Options{})
			w := s.NewChunkWriter()
			var ids []manifest.ID
			for i := range 10 {
				data := bytes.Repeat([]byte{byte(i + 1)}, 4096)
				id := manifest.BLAKE3.Sum(data)
				ids = append(ids, id)
				if _, err := w.Put(ctx, id, data, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			ents, _ := os.ReadDir(filepath.Join(d.Root(), packDir))
			if len(ents) != tc.packs {
				t.Errorf("%d packs, want %d", len(ents), tc.packs)
			}
			other, _ := OpenDir(d.Root())
			for _, id := range ids {
				if _, err := New(other, Options{}).GetChunk(ctx, manifest.BLAKE3, id, nil); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
