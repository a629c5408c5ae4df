package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"tms/internal/storetest"

	"github.com/minio/minio-go/v7"

	"tms/imageio"
	"tms/internal/miniotest"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/store"
	"tms/store/s3store"
)

// TestAcceptance is the image store's acceptance test, on both backends, through the real
// command lines: a 1 GiB mixed-content disk round-trips byte-identical; changing 1% of its
// 4 KiB blocks adds no more than the touched chunks; importing it again adds nothing; one
// flipped byte in a stored chunk fails verify and export, naming the chunk, and harms nothing
// else. Skipped with -short.
//
//	go test ./cli -run TestAcceptance -v
func TestAcceptance(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB acceptance test skipped with -short")
	}
	size := int64(1 << 30)
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.raw")
	if err := sampledisk.Write(src, sampledisk.Options{Size: size, Seed: 42}); err != nil {
		t.Fatal(err)
	}
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	s3env := s3Env(srv)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		run  tmsRun
		loc  string
		// open gives direct access to the same store, and flip corrupts one stored chunk.
		open func(t *testing.T) *store.Store
		flip func(t *testing.T, id manifest.ID)
	}{
		{
			name: "dir", run: newRunner(nil), loc: filepath.Join(dir, "store"),
			open: func(t *testing.T) *store.Store {
				d, err := store.OpenDir(filepath.Join(dir, "store"))
				if err != nil {
					t.Fatal(err)
				}
				return store.New(d, store.Options{})
			},
			flip: func(t *testing.T, id manifest.ID) { flipChunk(t, filepath.Join(dir, "store"), id) },
		},
		{
			name: "s3", run: newRunner(s3env), loc: "s3://" + bucket + "/acceptance",
			open: func(t *testing.T) *store.Store {
				b, err := s3store.New(ctx, s3store.Config{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
					Bucket: bucket, Prefix: "acceptance"})
				if err != nil {
					t.Fatal(err)
				}
				return store.New(b, store.Options{})
			},
			flip: func(t *testing.T, id manifest.ID) {
				cl := srv.Client(t)
				key := "acceptance/" + store.ChunkKey(id)
				obj, err := cl.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				if _, err := buf.ReadFrom(obj); err != nil {
					t.Fatal(err)
				}
				b := buf.Bytes()
				b[len(b)/2] ^= 0x01
				if _, err := cl.PutObject(ctx, bucket, key, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
					t.Fatal(err)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.raw")
			copyFile(t, src, disk)
			want := storetest.FileSum(t, disk)

			start := time.Now()
			t.Log(strings.TrimSpace(must(t, c.run, "image", "import", "--store", c.loc, "lab", disk)))
			out := filepath.Join(t.TempDir(), "out.raw")
			t.Log(strings.TrimSpace(must(t, c.run, "image", "export", "--store", c.loc, "lab", out)))
			if storetest.FileSum(t, out) != want {
				t.Fatal("exported disk differs from the source")
			}
			t.Logf("round trip of %d bytes byte-identical (sha256 %x) in %s", size, want, time.Since(start).Round(time.Millisecond))

			offs, err := sampledisk.Mutate(disk, 0.01, 7)
			if err != nil {
				t.Fatal(err)
			}
			touched := map[int]bool{}
			for _, o := range offs {
				touched[int(o/imageio.DefaultChunkSize)] = true
			}
			t.Log(strings.TrimSpace(must(t, c.run, "image", "import", "--store", c.loc, "lab", disk)))
			var d imageDetail
			if err := json.Unmarshal([]byte(must(t, c.run, "image", "show", "--store", c.loc, "lab", "--json")), &d); err != nil {
				t.Fatal(err)
			}
			s := c.open(t)
			v := mustResolve(t, s, "lab")
			parent, err := s.GetManifest(ctx, v.Manifest.Parent)
			if err != nil {
				t.Fatal(err)
			}
			var touchedBytes int64
			for i := range touched {
				id := v.Manifest.Chunks[i]
				if id.IsZero() || id == parent.Manifest.Chunks[i] {
					continue
				}
				n, err := s.StatChunk(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				touchedBytes += n
			}
			if d.AddedBytes == nil || *d.AddedBytes > touchedBytes {
				t.Fatalf("1%% change: the new version added %v bytes; the %d touched chunks hold %d compressed", d.AddedBytes, len(touched), touchedBytes)
			}
			t.Logf("1%% of 4 KiB blocks changed (%d blocks, %d chunks touched): added %d bytes ≤ %d bytes of the touched chunks",
				len(offs), len(touched), *d.AddedBytes, touchedBytes)

			again := must(t, c.run, "image", "import", "--store", c.loc, "lab", disk)
			if !strings.Contains(again, "unchanged") || !strings.Contains(again, "nothing added") {
				t.Fatalf("importing the same file again: %q", again)
			}
			t.Log(strings.TrimSpace(again))

			var victim manifest.ID
			for i := len(v.Manifest.Chunks) - 1; i >= 0; i-- {
				if id := v.Manifest.Chunks[i]; !id.IsZero() && id != parent.Manifest.Chunks[i] {
					victim = id
					break
				}
			}
			c.flip(t, victim)
			code, stdout, stderr := c.run("store", "verify", "--store", c.loc)
			if code != 1 || strings.Count(stdout, "\n") != 1 || !strings.Contains(stdout, "chunk "+victim.String()+": corrupt") {
				t.Fatalf("verify after flipping a byte of chunk %s: exit %d\n%s%s", victim.Short(), code, stdout, stderr)
			}
			t.Log(strings.TrimSpace(stdout))
			code, _, stderr = c.run("image", "export", "--store", c.loc, "lab", filepath.Join(t.TempDir(), "bad.raw"))
			if code != 1 || !strings.Contains(stderr, victim.String()) || !strings.Contains(stderr, "corrupt") {
				t.Fatalf("export with a corrupt chunk: exit %d\n%s", code, stderr)
			}
			t.Log(strings.TrimSpace(stderr))
			// Nothing else is harmed: the first version does not use the corrupt chunk and
			// still exports byte-identical to the original disk.
			first := filepath.Join(t.TempDir(), "first.raw")
			must(t, c.run, "image", "export", "--store", c.loc, "lab@"+parent.ID.String()[:12], first)
			if storetest.FileSum(t, first) != storetest.FileSum(t, src) {
				t.Fatal("the first version was harmed")
			}
		})
	}
}

func mustResolve(t *testing.T, s *store.Store, ref string) *store.Version {
	t.Helper()
	r, err := manifest.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Resolve(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// flipChunk flips a byte in the middle of chunk id's stored frame in the directory store at
// root, in its chunk file or its pack.
func flipChunk(t *testing.T, root string, id manifest.ID) {
	t.Helper()
	d, err := store.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	p, off, n, err := d.ChunkFile(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off+n/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
