package bootenv

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tms/signing"
	"tms/store"
)

// published publishes a sample bootenv into a fresh directory store and returns the store, its
// root and the version.
func published(t *testing.T, o PublishOptions) (*store.Store, string, *PublishResult) {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	b, err := store.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(b, store.Options{})
	if err := st.Init(ctx); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	if err := WriteSample(src, "6.12.0-1-amd64"); err != nil {
		t.Fatal(err)
	}
	res, err := Publish(ctx, st, src, o)
	if err != nil {
		t.Fatal(err)
	}
	return st, root, res
}

func TestMaterialize(t *testing.T) {
	ctx := context.Background()
	central, _ := signing.GenerateKey()
	other, _ := signing.GenerateKey()
	for _, tc := range []struct {
		name  string
		sign  *signing.PrivateKey // nil: unsigned
		spoil func(t *testing.T, root string)
		want  error  // nil: served
		says  string // in the error
	}{
		{name: "signed by central: served", sign: central},
		{name: "unsigned: refused", want: ErrUnsigned, says: "never served"},
		{name: "signed by another key: refused", sign: other, want: ErrUnsigned, says: "no valid signature"},
		{name: "a corrupt chunk: refused", sign: central, spoil: flipChunk, says: "reading it from the store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, root, res := published(t, PublishOptions{Name: "lab", AgentVersion: "v9"})
			if tc.sign != nil {
				if err := st.PutSignature(ctx, res.Version.ID, tc.sign.SignVersion(res.Version.ID)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.spoil != nil {
				tc.spoil(t, root)
			}
			dir := t.TempDir()
			v := &Versions{Store: st, Dir: dir, CentralKey: central.Public()}
			s, err := v.Materialize(ctx, res.Version.ID.String())
			if tc.want == nil && tc.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Info.Name != "lab" || s.Info.AgentVersion != "v9" || s.Info.KernelVersion != "6.12.0-1-amd64" {
					t.Fatalf("served %+v", s)
				}
				k, _ := os.ReadFile(filepath.Join(s.Dir, KernelFile))
				if v, err := KernelVersion(k); err != nil || v != "6.12.0-1-amd64" {
					t.Fatalf("served kernel: %q %v", v, err)
				}
				i, _ := os.ReadFile(filepath.Join(s.Dir, InitrdFile))
				if err := CheckInitrd(i); err != nil {
					t.Fatalf("served initrd: %v", err)
				}
				if again, ok, err := v.Materialized(res.Version.ID.String()); !ok || err != nil || again.Dir != s.Dir {
					t.Fatalf("materialized again: %+v %v %v", again, ok, err)
				}
				return
			}
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err %v; want %v saying %q", err, tc.want, tc.says)
			}
			left, _ := os.ReadDir(dir)
			if len(left) != 0 {
				t.Fatalf("a refused version left %v behind", left)
			}
		})
	}
}

func TestMaterializeRefusesWhatIsNotABootEnvOrNotHere(t *testing.T) {
	ctx := context.Background()
	central, _ := signing.GenerateKey()
	st, _, res := published(t, PublishOptions{})
	v := &Versions{Store: st, Dir: t.TempDir(), CentralKey: central.Public()}
	if _, err := v.Materialize(ctx, strings.Repeat("ab", 32)); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "share it to the region") {
		t.Fatalf("a version not in the store: %v", err)
	}
	if _, err := v.Materialize(ctx, "../etc"); err == nil {
		t.Fatal("a bad version id was taken")
	}
	if res.Image != "bootenv.default" {
		t.Fatalf("image %q", res.Image)
	}
}

func TestPublishRefusesABrokenBootEnvUnlessForced(t *testing.T) {
	ctx := context.Background()
	st, _, _ := published(t, PublishOptions{})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, KernelFile), []byte("not a kernel"), 0o644)
	initrd, _ := NewInitrd([]byte("#!/bin/sh\n"), nil)
	os.WriteFile(filepath.Join(dir, InitrdFile), initrd, 0o644)
	if _, err := Publish(ctx, st, dir, PublishOptions{Name: "broken"}); err == nil || !strings.Contains(err.Error(), "would not boot") {
		t.Fatalf("publish of a broken bootenv: %v", err)
	}
	res, err := Publish(ctx, st, dir, PublishOptions{Name: "broken", Force: true})
	if err != nil || len(res.Problems) != 2 {
		t.Fatalf("forced: %+v %v", res, err)
	}
}

// flipChunk flips a byte in every stored chunk file.
func flipChunk(t *testing.T, root string) {
	n := 0
	filepath.WalkDir(filepath.Join(root, "chunks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x40
		os.WriteFile(p, b, 0o644)
		n++
		return nil
	})
	if n == 0 {
		t.Fatal("no chunk files to spoil")
	}
}
