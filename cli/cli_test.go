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
	"tms/imageio"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/manifest"

	"tms/internal/miniotest"
	"tms/internal/sampledisk"
	"tms/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	miniotest.StopShared()
	pgtest.StopShared()
	os.Exit(code)
}

// tmsRun runs one tms command line in-process and returns its exit status, stdout and stderr.
type tmsRun func(args ...string) (int, string, string)

// testClock is the time tests' commands run at: task ids end in its stamp, testStamp.
var testClock = time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)

const testStamp = "/20261202-070000"

func newRunner(env map[string]string) tmsRun {
	return func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		off := false
		a := &App{Stdout: &out, Stderr: &errb, Progress: &off, Env: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		}, Now: func() time.Time { return testClock }}
		code := a.Run(context.Background(), args)
		return code, out.String(), errb.String()
	}
}

func must(t *testing.T, run tmsRun, args ...string) string {
	t.Helper()
	code, out, errs := run(args...)
	if code != 0 {
		t.Fatalf("tms %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// s3Env is the environment that points tms at srv.
func s3Env(srv *miniotest.Server) map[string]string {
	return map[string]string{
		"TMS_STORE_S3_ENDPOINT":   "http://" + srv.Endpoint,
		"TMS_STORE_S3_ACCESS_KEY": srv.AccessKey,
		"TMS_STORE_S3_SECRET_KEY": srv.SecretKey,
	}
}

// backends gives each test a fresh local store and a fresh S3 store on a real MinIO server.
func backends(t *testing.T) map[string]struct {
	run tmsRun
	loc string
} {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	s3env := s3Env(srv)
	return map[string]struct {
		run tmsRun
		loc string
	}{
		"dir": {newRunner(nil), filepath.Join(t.TempDir(), "store")},
		"s3":  {newRunner(s3env), "s3://" + bucket + "/lab/images"},
	}
}

func TestImageCommands(t *testing.T) {
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			run, st := b.run, b.loc
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk.raw")
			if err := sampledisk.Write(disk, sampledisk.Options{Size: 24 << 20, Seed: 1}); err != nil {
				t.Fatal(err)
			}
			out := must(t, run, "image", "import", "--store", st, "lab:v1", disk)
			if !strings.HasPrefix(out, "imported lab:v1 as ") || !strings.Contains(out, "(parent none)") {
				t.Fatalf("import summary: %q", out)
			}
			out = must(t, run, "image", "import", "--store", st, "lab:v1", disk)
			if !strings.Contains(out, "unchanged") || !strings.Contains(out, "nothing added") {
				t.Fatalf("re-import summary: %q", out)
			}
			if _, err := sampledisk.Mutate(disk, 0.001, 2); err != nil {
				t.Fatal(err)
			}
			must(t, run, "image", "import", "--store", st, "lab:v1", disk)

			var rows []imageRow
			if err := json.Unmarshal([]byte(must(t, run, "image", "ls", "--store", st, "--json")), &rows); err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 || len(rows[0].Tags) != 1 || rows[0].Tags[0] != "v1" || len(rows[1].Tags) != 0 || rows[0].Parent != rows[1].Version {
				t.Fatalf("image ls: %+v", rows)
			}
			text := must(t, run, "image", "ls", "--store", st)
			if !strings.Contains(text, rows[0].Version[:12]) || !strings.Contains(text, "NAME") {
				t.Fatalf("image ls text:\n%s", text)
			}

			var d imageDetail
			if err := json.Unmarshal([]byte(must(t, run, "image", "show", "--store", st, "lab:v1", "--json")), &d); err != nil {
				t.Fatal(err)
			}
			if d.Version != rows[0].Version || d.Parent != rows[1].Version || d.DiskSize != 24<<20 || d.Chunks != 24<<20/imageio.DefaultChunkSize ||
				d.StoredBytes <= 0 || d.AddedBytes == nil || *d.AddedBytes <= 0 || *d.AddedBytes >= d.StoredBytes ||
				d.Partitions == nil || d.Partitions.Scheme != "gpt" {
				t.Fatalf("image show: %+v", d)
			}
			text = must(t, run, "image", "show", "--store", st, "lab@"+d.Version[:8])
			for _, want := range []string{"Version:", d.Version, "Parent:", "Stored:", "Added:", "EFI System"} {
				if !strings.Contains(text, want) {
					t.Errorf("image show text lacks %q:\n%s", want, text)
				}
			}

			outFile := filepath.Join(dir, "out.raw")
			out = must(t, run, "image", "export", "--store", st, "lab:v1", outFile)
			if !strings.HasPrefix(out, "exported lab@") || storetest.FileSum(t, outFile) != storetest.FileSum(t, disk) {
				t.Fatalf("export: %q; identical=%v", out, storetest.FileSum(t, outFile) == storetest.FileSum(t, disk))
			}
			out = must(t, run, "image", "export", "--store", st, "lab@"+rows[1].Version[:10], outFile)
			if !strings.Contains(out, "already right") {
				t.Fatalf("export over an older copy: %q", out)
			}

			must(t, run, "store", "verify", "--store", st)
			out = must(t, run, "image", "rm", "--store", st, "lab@"+rows[1].Version[:10])
			if !strings.Contains(out, "0 tag(s)") || !strings.Contains(out, "1 version(s)") {
				t.Fatalf("rm of the old version: %q", out)
			}
			out = must(t, run, "store", "gc", "--store", st)
			if strings.Contains(out, "freed 0 chunks") {
				t.Fatalf("gc freed nothing after rm: %q", out)
			}
			out = must(t, run, "image", "rm", "--store", st, "lab")
			if !strings.Contains(out, "1 tag(s) [lab:v1]") {
				t.Fatalf("rm of the image: %q", out)
			}
			out = must(t, run, "store", "gc", "--store", st)
			if !strings.Contains(out, "kept 0 chunks") {
				t.Fatalf("gc after removing everything: %q", out)
			}
		})
	}
}

func TestFlippedByteFailsVerifyAndExport(t *testing.T) {
	run := newRunner(nil)
	dir := t.TempDir()
	st := filepath.Join(dir, "store")
	disk := filepath.Join(dir, "disk.raw")
	if err := sampledisk.Write(disk, sampledisk.Options{Size: 8 << 20, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	must(t, run, "image", "import", "--store", st, "lab", disk)
	// Flip the last byte of the first stored chunk's frame, in its chunk file or its pack.
	d, err := store.OpenDir(st)
	if err != nil {
		t.Fatal(err)
	}
	v, err := store.New(d, store.Options{}).Resolve(context.Background(), manifest.Ref{Name: "lab", Tag: manifest.DefaultTag})
	if err != nil {
		t.Fatal(err)
	}
	var victim manifest.ID
	for _, c := range v.Manifest.Chunks {
		if !c.IsZero() {
			victim = c
			break
		}
	}
	p, off, n, err := d.ChunkFile(context.Background(), victim)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	b[off+n-1] ^= 1
	os.WriteFile(p, b, 0o644)
	id := victim.String()

	code, out, errs := run("store", "verify", "--store", st)
	if code != 1 || !strings.Contains(out, "chunk "+id+": corrupt") || !strings.Contains(errs, "1 problem(s)") {
		t.Fatalf("verify: exit %d\n%s\n%s", code, out, errs)
	}
	code, _, errs = run("image", "export", "--store", st, "lab", filepath.Join(dir, "out.raw"))
	if code != 1 || !strings.Contains(errs, "chunk "+id) || !strings.Contains(errs, "corrupt") || !strings.Contains(errs, "incomplete") {
		t.Fatalf("export: exit %d\n%s", code, errs)
	}
}

func TestUsageAndLookupErrors(t *testing.T) {
	run := newRunner(nil)
	dir := t.TempDir()
	st := filepath.Join(dir, "store")
	disk := filepath.Join(dir, "disk.raw")
	sampledisk.Write(disk, sampledisk.Options{Size: 4 << 20, Seed: 4})
	must(t, run, "image", "import", "--store", st, "lab", disk)

	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"image", "import", "lab", disk}, 2, "--store is required"},
		{[]string{"image", "import", "--store", st, "lab"}, 2, "takes NAME[:TAG] and FILE"},
		{[]string{"image", "import", "--store", st, "lab@abcdef12", disk}, 2, "not a version"},
		{[]string{"image", "import", "--store", st, "../etc", disk}, 2, "must start with a letter or digit"},
		{[]string{"image", "export", "--store", st, "nope", filepath.Join(dir, "x")}, 1, "image nope:latest: not found"},
		{[]string{"image", "show", "--store", st, "lab@abc"}, 2, "too short"},
		{[]string{"image", "ls", "--store", filepath.Join(dir, "missing")}, 1, "no tms store at"},
		{[]string{"image", "ls", "--store", dir}, 1, "no tms-store.json"},
		{[]string{"image", "ls", "--store", "s3://Bad_Bucket"}, 2, "bucket"},
		{[]string{"image", "ls", "--store", "s3://bucket"}, 1, "no S3 endpoint configured"},
		{[]string{"image", "ls", "--bogus"}, 2, "unknown flag"},
		{[]string{"--log-level", "loud", "version"}, 2, "--log-level"},
	}
	for _, c := range cases {
		code, _, errs := run(c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("tms %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(c.args, " "), code, errs, c.code, c.want)
		}
	}
}

func TestS3WrongKeysAndBucket(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	for name, c := range map[string]struct {
		env  map[string]string
		loc  string
		want string
	}{
		"wrong secret": {map[string]string{"TMS_STORE_S3_ENDPOINT": "http://" + srv.Endpoint,
			"TMS_STORE_S3_ACCESS_KEY": srv.AccessKey, "TMS_STORE_S3_SECRET_KEY": "wrong-secret"}, "s3://" + bucket, "unavailable"},
		"wrong bucket": {map[string]string{"TMS_STORE_S3_ENDPOINT": "http://" + srv.Endpoint,
			"TMS_STORE_S3_ACCESS_KEY": srv.AccessKey, "TMS_STORE_S3_SECRET_KEY": srv.SecretKey}, "s3://no-such-bucket-here", "no-such-bucket-here"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errs := newRunner(c.env)("image", "ls", "--store", c.loc)
			if code != 1 || !strings.Contains(errs, c.want) || strings.Contains(errs, "not found") || strings.Contains(errs, "wrong-secret") {
				t.Fatalf("exit %d, stderr %q", code, errs)
			}
		})
	}
}

func TestDevDemo(t *testing.T) {
	run := newRunner(nil)
	data := t.TempDir()
	out := must(t, run, "dev", "store-demo", "--data", data, "--size", "16777216")
	for _, want := range []string{"identical", "all good", "added only"} {
		if !strings.Contains(out, want) {
			t.Errorf("dev output lacks %q:\n%s", want, out)
		}
	}
	if _, err := store.OpenDir(filepath.Join(data, "store")); err != nil {
		t.Fatal(err)
	}
}
