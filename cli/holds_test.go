package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/internal/miniotest"
	"tms/internal/sampledisk"
	"tms/manifest"
)

// A version a deploy is using survives 'image rm' (which names the deploy) and 'store gc'
// (its chunks stay readable); once the deploy releases it, both go through.
func TestHeldVersionSurvivesRmAndGC(t *testing.T) {
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			run, st := b.run, b.loc
			disk := filepath.Join(t.TempDir(), "disk.raw")
			if err := sampledisk.Write(disk, sampledisk.Options{Size: 8 << 20, Seed: 3}); err != nil {
				t.Fatal(err)
			}
			must(t, run, "image", "import", "--store", st, "lab:v1", disk)
			exportOK := func() {
				t.Helper()
				must(t, run, "image", "export", "--store", st, "lab@"+version(t, run, st), filepath.Join(t.TempDir(), "out.raw"))
			}
			id, err := manifest.ParseID(version(t, run, st))
			if err != nil {
				t.Fatal(err)
			}

			// What a region does when a deploy starts: the same store, another process.
			env := map[string]string{}
			if name == "s3" {
				env = s3Env(miniotest.Shared(t))
			}
			s, err := (&App{Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}).openStore(context.Background(), nil, st, false)
			if err != nil {
				t.Fatal(err)
			}
			deploy := "deploy/region-b/lab/classroom/pc-07/0193a1"
			if err := s.Hold(context.Background(), id, deploy, time.Now().Add(30*time.Minute)); err != nil {
				t.Fatal(err)
			}

			code, _, errs := run("image", "rm", "--store", st, "lab:v1")
			if code != 1 || !strings.Contains(errs, "version "+id.Short()+" is in use by "+deploy+" until ") || !strings.Contains(errs, "wait for it to finish or cancel it") {
				t.Fatalf("image rm of a held version: exit %d, stderr %q", code, errs)
			}
			out := must(t, run, "store", "holds", "--store", st)
			if !strings.Contains(out, id.String()[:12]) || !strings.Contains(out, deploy) {
				t.Fatalf("store holds:\n%s", out)
			}
			var rows []holdRow
			if err := json.Unmarshal([]byte(must(t, run, "store", "holds", "--store", st, "--json")), &rows); err != nil || len(rows) != 1 || rows[0].Holder != deploy || !rows[0].Live {
				t.Fatalf("store holds --json: %+v, %v", rows, err)
			}
			if out := must(t, run, "image", "show", "--store", st, "lab:v1"); !strings.Contains(out, "In use:") || !strings.Contains(out, "by "+deploy) {
				t.Fatalf("image show of a held version:\n%s", out)
			}
			out = must(t, run, "store", "gc", "--store", st)
			if !strings.Contains(out, "freed 0 chunks") || !strings.Contains(out, "(1 holds in force)") {
				t.Fatalf("gc with a held version: %q", out)
			}
			exportOK()

			if err := s.Release(context.Background(), id, deploy); err != nil {
				t.Fatal(err)
			}
			if out := must(t, run, "store", "holds", "--store", st); !strings.Contains(out, "no version is in use") {
				t.Fatalf("store holds after release: %q", out)
			}
			must(t, run, "image", "rm", "--store", st, "lab:v1")
			out = must(t, run, "store", "gc", "--store", st)
			if strings.Contains(out, "freed 0 chunks") {
				t.Fatalf("gc after release and rm freed nothing: %q", out)
			}
		})
	}
}

// version returns the id of lab:v1 in st.
func version(t *testing.T, run tmsRun, st string) string {
	t.Helper()
	var d imageDetail
	if err := json.Unmarshal([]byte(must(t, run, "image", "show", "--store", st, "lab:v1", "--json")), &d); err != nil {
		t.Fatal(err)
	}
	return d.Version
}
