package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
)

// publish stores a version of name made of chunks with the given contents, writing only the
// chunks the store lacks (as imports do), in one commit.
func publish(t testing.TB, s *store.Store, name string, contents ...string) *store.Version {
	t.Helper()
	ctx := context.Background()
	m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, ChunkSize: manifest.MinChunkSize,
		DiskSize: int64(len(contents)) * manifest.MinChunkSize,
		Meta:     manifest.Meta{Name: name, Created: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), Source: "test"}}
	w := s.NewChunkWriter()
	for _, c := range contents {
		data := chunkData(c)
		id := m.Hash.Sum(data)
		m.Chunks = append(m.Chunks, id)
		if ok, err := s.HasChunk(ctx, id); err != nil {
			t.Fatal(err)
		} else if ok {
			continue
		}
		if _, err := w.Put(ctx, id, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	enc, err := manifest.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.PutVersion(ctx, enc, store.Stats{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetTag(ctx, name, "latest", v.ID); err != nil {
		t.Fatal(err)
	}
	return v
}

// chunkData is a chunk whose bytes start with c and are pseudo-random after (so its frame is
// not tiny), the same for the same c.
func chunkData(c string) []byte {
	data := make([]byte, manifest.MinChunkSize)
	var seed [32]byte
	copy(seed[:], c)
	rand.NewChaCha8(seed).Read(data[:len(data)/2])
	copy(data, c)
	return data
}

func names(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// files lists the regular files under dir/sub, by name.
func files(t testing.TB, dir, sub string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	filepath.WalkDir(filepath.Join(dir, sub), func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			fi, _ := e.Info()
			out[filepath.Base(p)] = fi.Size()
		}
		return nil
	})
	return out
}

// readAll checks that every chunk of v reads back and matches its id.
func readAll(t testing.TB, s *store.Store, v *store.Version) {
	t.Helper()
	for _, id := range v.Manifest.Chunks {
		if _, err := s.GetChunk(context.Background(), v.Manifest.Hash, id, nil); err != nil {
			t.Fatalf("%s: chunk %s: %v", v.Manifest.Meta.Name, id.Short(), err)
		}
	}
}

func TestPackedChunksAreVisibleOnlyAfterCommit(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	s, _ := storetest.PackDirAt(t, root)
	w := s.NewChunkWriter()
	var ids []manifest.ID
	for _, c := range names("c", 20) {
		data := chunkData(c)
		id := manifest.BLAKE3.Sum(data)
		ids = append(ids, id)
		if _, err := w.Put(ctx, id, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if ok, err := s.HasChunk(ctx, id); err != nil || ok {
			t.Fatalf("chunk %s before commit: present %v, %v; want absent", id.Short(), ok, err)
		}
		if _, err := s.Backend().Get(ctx, store.ChunkKey(id)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("get before commit: %v, want ErrNotFound", err)
		}
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(files(t, root, "chunks")); n != 0 {
		t.Errorf("%d chunk files, want none", n)
	}
	if packs := files(t, root, "packs"); len(packs) != 1 {
		t.Errorf("packs %v, want one", packs)
	}
	// This store and another one on the same directory (another process) see every chunk.
	other, err := store.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*store.Store{s, store.New(other, store.Options{})} {
		for _, id := range ids {
			if ok, err := st.HasChunk(ctx, id); err != nil || !ok {
				t.Fatalf("chunk %s after commit: present %v, %v", id.Short(), ok, err)
			}
			if n, err := st.StatChunk(ctx, id); err != nil || n <= 0 {
				t.Fatalf("stat chunk %s: %d, %v", id.Short(), n, err)
			}
			if _, err := st.GetChunk(ctx, manifest.BLAKE3, id, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Aborted puts leave nothing behind, not even under tmp/.
	w2 := s.NewChunkWriter()
	data := chunkData("aborted")
	id := manifest.BLAKE3.Sum(data)
	if _, err := w2.Put(ctx, id, data, nil); err != nil {
		t.Fatal(err)
	}
	w2.Abort()
	if ok, _ := s.HasChunk(ctx, id); ok {
		t.Error("an aborted chunk is present")
	}
	if tmp := files(t, root, "tmp"); len(tmp) != 0 {
		t.Errorf("abort left %v under tmp/", tmp)
	}
}

func TestPacksGC(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	s, _ := storetest.PackDirAt(t, root)
	publish(t, s, "a", names("a", 10)...) // pack 1
	publish(t, s, "b", names("b", 10)...) // pack 2
	publish(t, s, "c", names("c", 5)...)  // pack 3
	a2 := publish(t, s, "a2", names("a", 3)...)
	b2 := publish(t, s, "b2", names("b", 8)...)
	if packs := files(t, root, "packs"); len(packs) != 3 {
		t.Fatalf("packs %v, want 3", packs)
	}
	for _, ref := range []string{"a", "b", "c"} {
		r, _ := manifest.ParseRef(ref)
		if _, err := s.Remove(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	before := sum(files(t, root, "packs"))
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// a: 3 of 10 live, b: 8 of 10: rewritten; c: none live, removed.
	if res.RemovedPacks != 1 || res.RewrittenPacks != 2 || res.FreedChunks != 14 || res.KeptChunks != 11 {
		t.Errorf("gc %+v: want 1 pack removed, 2 rewritten, 14 chunks freed, 11 kept", res)
	}
	after := files(t, root, "packs")
	if len(after) != 2 {
		t.Errorf("packs after gc %v, want 2", after)
	}
	// The packs shrank by the freed chunks' frames and their index entries (48 bytes each),
	// and the removed pack's header and trailer.
	if freed := before - sum(after); freed != res.FreedBytes+14*48+8+32 {
		t.Errorf("packs shrank by %d bytes, gc says it freed %d bytes of chunks", freed, res.FreedBytes)
	}
	u, err := s.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Used < sum(after) {
		t.Errorf("usage %d bytes, less than the packs' %d", u.Used, sum(after))
	}
	readAll(t, s, a2)
	readAll(t, s, b2)
	fresh, _ := store.OpenDir(root)
	readAll(t, store.New(fresh, store.Options{}), a2)

	// Nothing more to do: a second collection changes nothing.
	res, err = s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.RemovedPacks != 0 || res.RewrittenPacks != 0 || res.FreedChunks != 0 || res.KeptChunks != 11 {
		t.Errorf("second gc %+v: want nothing freed, 11 chunks kept", res)
	}
	rep, err := s.Verify(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.Chunks != 11 {
		t.Errorf("verify: %d chunks, problems %v; want 11 chunks, none", rep.Chunks, rep.Problems)
	}
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func TestGCKeepsOneCopyOfChunksInTwoPacks(t *testing.T) {
	// A crash between publishing a rewritten pack and removing the old one leaves the same
	// chunks in two packs: the next collection removes one copy.
	for _, copyName := range []string{"0copy-", "zcopy-"} { // the copy sorts first, or last
		t.Run(copyName, func(t *testing.T) {
			ctx := context.Background()
			root := filepath.Join(t.TempDir(), "s")
			s, _ := storetest.PackDirAt(t, root)
			v := publish(t, s, "a", names("a", 6)...)
			publish(t, s, "b", names("b", 6)...)
			r, _ := manifest.ParseRef("b")
			if _, err := s.Remove(ctx, r); err != nil {
				t.Fatal(err)
			}
			for name := range files(t, root, "packs") {
				b, err := os.ReadFile(filepath.Join(root, "packs", name))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, "packs", copyName+name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res, err := s.GC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.RemovedPacks != 3 || len(files(t, root, "packs")) != 1 || res.KeptChunks != 6 || res.FreedChunks != 18 {
				t.Errorf("gc %+v, packs %v: want one copy of a's pack left, 6 kept, 18 freed", res, files(t, root, "packs"))
			}
			readAll(t, s, v)
			fresh, _ := store.OpenDir(root)
			readAll(t, store.New(fresh, store.Options{}), v)
		})
	}
}

func TestOldChunkFilesStillRead(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	old, err := store.NewDir(root) // as a tms before packs wrote it
	if err != nil {
		t.Fatal(err)
	}
	olds := store.New(old, store.Options{})
	if err := olds.Init(ctx); err != nil {
		t.Fatal(err)
	}
	v1 := publish(t, olds, "old", names("o", 6)...)
	if n := len(files(t, root, "chunks")); n != 6 {
		t.Fatalf("%d chunk files, want 6", n)
	}
	s, _ := storetest.PackDirAt(t, root)
	readAll(t, s, v1)
	v2 := publish(t, s, "new", append(names("o", 2), names("n", 4)...)...)
	if n := len(files(t, root, "chunks")); n != 6 {
		t.Errorf("%d chunk files after a packed import, want the old 6", n)
	}
	readAll(t, s, v2)
	r, _ := manifest.ParseRef("old")
	if _, err := s.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.FreedChunks != 4 || len(files(t, root, "chunks")) != 2 {
		t.Errorf("gc %+v left chunk files %v: want the 4 unused old ones freed", res, files(t, root, "chunks"))
	}
	readAll(t, s, v2)
	rep, err := s.Verify(ctx, 2, nil)
	if err != nil || len(rep.Problems) != 0 || rep.Chunks != 6 {
		t.Fatalf("verify %+v, %v: want 6 chunks, no problems", rep, err)
	}
}

func TestConcurrentPackWritersAndReaders(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	s, _ := storetest.PackDirAt(t, root)
	// Readers use another Dir on the same directory, as another process would.
	od, err := store.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	reader := store.New(od, store.Options{})
	committed := make(chan manifest.ID, 1024)
	var writers, readers sync.WaitGroup
	errs := make(chan error, 16)
	for wi := range 4 {
		writers.Go(func() {
			w := s.NewChunkWriter()
			for round := range 6 {
				var ids []manifest.ID
				// Each writer writes chunks of its own and chunks every writer writes.
				for _, c := range append(names(fmt.Sprintf("w%d-r%d-", wi, round), 5), names(fmt.Sprintf("shared-r%d-", round), 3)...) {
					data := chunkData(c)
					id := manifest.BLAKE3.Sum(data)
					if _, err := w.Put(ctx, id, data, nil); err != nil {
						errs <- err
						return
					}
					ids = append(ids, id)
				}
				if err := w.Commit(ctx); err != nil {
					errs <- err
					return
				}
				for _, id := range ids {
					committed <- id
				}
			}
		})
	}
	for range 3 {
		readers.Go(func() {
			for id := range committed {
				if _, err := reader.GetChunk(ctx, manifest.BLAKE3, id, nil); err != nil {
					errs <- fmt.Errorf("reading a committed chunk while others write: %w", err)
					return
				}
			}
		})
	}
	writers.Wait()
	close(committed)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rep, err := reader.Verify(ctx, 2, nil)
	if err != nil || len(rep.Problems) != 0 || rep.Chunks != 4*6*5+6*3 {
		t.Fatalf("verify %d chunks, problems %v, %v: want %d chunks, none", rep.Chunks, rep.Problems, err, 4*6*5+6*3)
	}
}

func TestDamagedPackIsRefused(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// spoil damages the pack file at p whose first frame is at off, n bytes long.
		spoil func(t *testing.T, p string, off, n int64)
		// fresh: read through a store opened after the damage (else one that loaded the
		// pack's index before).
		fresh bool
	}{
		{"flipped frame byte", func(t *testing.T, p string, off, n int64) { flip(t, p, off+n/2) }, true},
		{"flipped frame byte under a reader", func(t *testing.T, p string, off, n int64) { flip(t, p, off+n/2) }, false},
		{"flipped index byte", func(t *testing.T, p string, off, n int64) {
			fi, _ := os.Stat(p)
			flip(t, p, fi.Size()-32-20)
		}, true},
		{"truncated", func(t *testing.T, p string, off, n int64) { os.Truncate(p, off+n/2) }, true},
		{"truncated under a reader", func(t *testing.T, p string, off, n int64) { os.Truncate(p, off+n/2) }, false},
		{"emptied", func(t *testing.T, p string, off, n int64) { os.Truncate(p, 0) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "s")
			s, d := storetest.PackDirAt(t, root)
			v := publish(t, s, "a", names("a", 4)...)
			victim := v.Manifest.Chunks[0]
			p, off, n, err := d.ChunkFile(ctx, victim)
			if err != nil {
				t.Fatal(err)
			}
			pack := "packs/" + filepath.Base(p)
			if !strings.HasSuffix(p, ".pack") {
				t.Fatalf("chunk file %s is not a pack", p)
			}
			tc.spoil(t, p, off, n)
			rs := s
			if tc.fresh {
				fd, err := store.OpenDir(root)
				if err != nil {
					t.Fatal(err)
				}
				rs = store.New(fd, store.Options{})
			}
			_, err = rs.GetChunk(ctx, manifest.BLAKE3, victim, nil)
			if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), pack) {
				t.Fatalf("reading chunk %s: %v; want ErrCorrupt naming %s", victim.Short(), err, pack)
			}
			if _, err := rs.Backend().Get(ctx, store.ChunkKey(victim)); !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("raw frame of the chunk served: %v", err)
			}
			rep, err := rs.Verify(ctx, 2, nil)
			if err != nil {
				t.Fatal(err)
			}
			named := false
			for _, p := range rep.Problems {
				named = named || errors.Is(p.Kind, store.ErrCorrupt) && strings.Contains(p.String(), pack)
			}
			if !named {
				t.Fatalf("verify problems %v: want the damaged pack %s named", rep.Problems, pack)
			}
			// gc neither deletes the damaged pack nor fails because it is there.
			res, err := rs.GC(ctx)
			if err != nil {
				t.Fatalf("gc: %v", err)
			}
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("gc (%+v) removed the damaged pack: %v", res, err)
			}
		})
	}
}

func flip(t *testing.T, p string, at int64) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPackCommitKilled kills a process that writes and commits packs at a random moment, again
// and again, and checks that every chunk whose commit returned is there and sound, and that
// nothing half-written is taken for a pack.
func TestPackCommitKilled(t *testing.T) {
	if dir := os.Getenv("TMS_TEST_PACK_WRITER"); dir != "" {
		packWriterChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts subprocesses")
	}
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	s, _ := storetest.PackDirAt(t, root)
	var committed []manifest.ID
	for run := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPackCommitKilled$")
		cmd.Env = append(os.Environ(), "TMS_TEST_PACK_WRITER="+root, fmt.Sprintf("TMS_TEST_PACK_SEED=%d", run))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		want := 40 + rand.IntN(60)
		n := 0
		for n < want && sc.Scan() {
			id, err := manifest.ParseID(strings.TrimSpace(sc.Text()))
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			committed = append(committed, id)
			n++
		}
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		cmd.Process.Kill()
		// What it printed before it died was committed too.
		for sc.Scan() {
			if id, err := manifest.ParseID(strings.TrimSpace(sc.Text())); err == nil {
				committed = append(committed, id)
			}
		}
		cmd.Wait()
	}
	fd, err := store.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	fresh := store.New(fd, store.Options{})
	for _, id := range committed {
		if _, err := fresh.GetChunk(ctx, manifest.BLAKE3, id, nil); err != nil {
			t.Fatalf("a chunk whose commit returned: %v", err)
		}
	}
	rep, err := fresh.Verify(ctx, 2, nil)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify after kills: %v, %v", rep.Problems, err)
	}
	// Leftovers of the killed writers are under tmp/ only, and gc removes them once old.
	old := time.Now().Add(-2 * time.Hour)
	for name := range files(t, root, "tmp") {
		os.Chtimes(filepath.Join(root, "tmp", name), old, old)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if left := files(t, root, "tmp"); len(left) != 0 {
		t.Errorf("gc left %v under tmp/", left)
	}
}

// packWriterChild writes batches of chunks to the pack store at root until killed, printing
// each chunk's id once its commit returned.
func packWriterChild(root string) {
	ctx := context.Background()
	d, err := store.OpenDirWith(root, store.DirOptions{Packs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s := store.New(d, store.Options{})
	seed := os.Getenv("TMS_TEST_PACK_SEED")
	w := s.NewChunkWriter()
	for round := 0; ; round++ {
		var ids []manifest.ID
		for i := range 7 {
			data := chunkData(fmt.Sprintf("child-%s-%d-%d", seed, round, i))
			id := manifest.BLAKE3.Sum(data)
			if _, err := w.Put(ctx, id, data, nil); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			ids = append(ids, id)
		}
		if err := w.Commit(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, id := range ids {
			fmt.Println(id)
		}
	}
}

func TestReaderFollowsPacksRewrittenByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	s, _ := storetest.PackDirAt(t, root)
	v := publish(t, s, "a", names("a", 10)...)
	publish(t, s, "a2", append(names("a", 2), names("x", 2)...)...)
	// The reader (say the region's server) has loaded the index before gc runs elsewhere.
	rd, err := store.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	reader := store.New(rd, store.Options{})
	readAll(t, reader, v)
	r, _ := manifest.ParseRef("a")
	if _, err := s.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
	gd, err := store.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.New(gd, store.Options{}).GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.RewrittenPacks != 1 {
		t.Fatalf("gc %+v: want a's pack rewritten", res)
	}
	for _, c := range append(names("a", 2), names("x", 2)...) {
		id := manifest.BLAKE3.Sum(chunkData(c))
		if _, err := reader.GetChunk(ctx, manifest.BLAKE3, id, nil); err != nil {
			t.Fatalf("reader after another process rewrote the pack: %v", err)
		}
		if ok, err := reader.HasChunk(ctx, id); err != nil || !ok {
			t.Fatalf("reader: chunk %s present %v, %v", id.Short(), ok, err)
		}
	}
	gone := manifest.BLAKE3.Sum(chunkData("a7"))
	if _, err := reader.GetChunk(ctx, manifest.BLAKE3, gone, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a collected chunk: %v, want ErrNotFound", err)
	}
}

func TestGCDropsPackedCopiesOfChunkFiles(t *testing.T) {
	// A chunk in a chunk file and in a pack (stored again by a process that missed the one,
	// or written by an older tms) is kept once: the chunk file stays, the packed copy goes.
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	old, err := store.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	olds := store.New(old, store.Options{})
	if err := olds.Init(ctx); err != nil {
		t.Fatal(err)
	}
	v := publish(t, olds, "a", names("a", 4)...)
	s, _ := storetest.PackDirAt(t, root)
	w := s.NewChunkWriter()
	for _, c := range append(names("a", 4), names("x", 4)...) {
		data := chunkData(c)
		if _, err := w.Put(ctx, manifest.BLAKE3.Sum(data), data, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.KeptChunks != 4 || res.FreedChunks != 8 || res.RemovedPacks != 1 || len(files(t, root, "chunks")) != 4 {
		t.Errorf("gc %+v, chunk files %d: want the 4 chunk files kept, the pack of copies and dead chunks removed", res, len(files(t, root, "chunks")))
	}
	readAll(t, s, v)
}

// Holds keep a version's chunks through rm and gc in a store that writes packs too, where gc
// rewrites packs instead of deleting chunk files.
func TestHoldsOnPackedDir(t *testing.T) {
	s, _ := storetest.PackDirAt(t, filepath.Join(t.TempDir(), "s"))
	storetest.Holds(t, s)
}

// gc waits for no import: it refuses while one holds the store, and packs stay as they are.
func TestGCRefusesWhileAPackedImportRuns(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "s")
	s, _ := storetest.PackDirAt(t, root)
	publish(t, s, "a", names("a", 4)...)
	r, _ := manifest.ParseRef("a")
	if _, err := s.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
	lock, err := s.LockShared(ctx, "import b", nil)
	if err != nil {
		t.Fatal(err)
	}
	before := files(t, root, "packs")
	if _, err := s.GC(ctx); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("gc during an import: %v, want ErrBusy", err)
	}
	if after := files(t, root, "packs"); len(after) != len(before) {
		t.Fatalf("gc during an import touched packs: %v, then %v", before, after)
	}
	lock.Release(ctx)
	if res, err := s.GC(ctx); err != nil || res.RemovedPacks != 1 {
		t.Fatalf("gc after the import: %+v, %v", res, err)
	}
}
