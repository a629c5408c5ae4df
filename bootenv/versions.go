package bootenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"tms/imageio"
	"tms/manifest"
	"tms/signing"
	"tms/store"
)

// Errors of Materialize, for errors.Is.
var (
	// ErrUnsigned: the version has no signature by central's key, or one that does not verify.
	ErrUnsigned = errors.New("not signed by central")
	// ErrNotBootEnv: the version is a disk image, not a version of the in-memory OS.
	ErrNotBootEnv = errors.New("not a version of the in-memory OS")
)

// InfoFile is written beside vmlinuz and initrd in a materialized version's directory.
const InfoFile = "bootenv.json"

// Served is a version of the in-memory OS ready to be served: its directory holds vmlinuz,
// initrd and InfoFile.
type Served struct {
	Version string     `json:"version"`
	Dir     string     `json:"-"`
	Info    BundleInfo `json:"info"`
}

// Versions materializes the versions of the in-memory OS a region server serves from its image
// store into Dir/VERSION/{vmlinuz,initrd}: only a version central signed, every chunk checked
// against its id as it is read, the bundle's files against their hashes, and the directory
// appears whole or not at all (a temporary directory renamed into place).
//
//	v := &bootenv.Versions{Store: st, Dir: filepath.Join(dataDir, "bootenvs"), CentralKey: pub}
//	s, err := v.Materialize(ctx, "3fa4…")   // s.Dir holds vmlinuz and initrd
type Versions struct {
	Store      *store.Store
	Dir        string
	CentralKey signing.PublicKey
	Log        *slog.Logger

	mu sync.Mutex // one materialization at a time: they are rare and large
}

func (v *Versions) log() *slog.Logger {
	if v.Log != nil {
		return v.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Materialized returns the version's directory if it is already there.
func (v *Versions) Materialized(version string) (Served, bool, error) {
	id, err := manifest.ParseID(version)
	if err != nil {
		return Served{}, false, fmt.Errorf("bootenv version %.80q: %w", version, err)
	}
	dir := filepath.Join(v.Dir, id.String())
	b, err := os.ReadFile(filepath.Join(dir, InfoFile))
	if errors.Is(err, os.ErrNotExist) {
		return Served{}, false, nil
	}
	if err != nil {
		return Served{}, false, err
	}
	var s Served
	if err := json.Unmarshal(b, &s); err != nil || s.Version != id.String() {
		return Served{}, false, fmt.Errorf("%s: unreadable or for another version: remove the directory and ask again", filepath.Join(dir, InfoFile))
	}
	s.Dir = dir
	return s, true, nil
}

// Materialize makes version ready to serve (see Versions) and returns where it is. A version
// that is not in the store is store.ErrNotFound; one whose signature does not verify is
// ErrUnsigned and nothing of it is written.
func (v *Versions) Materialize(ctx context.Context, version string) (Served, error) {
	if s, ok, err := v.Materialized(version); ok || err != nil {
		return s, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if s, ok, err := v.Materialized(version); ok || err != nil {
		return s, err
	}
	id, _ := manifest.ParseID(version)
	ver, err := v.Store.GetManifest(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Served{}, fmt.Errorf("bootenv version %s is not in this server's store %s (share it to the region first; if another server of the region holds it, this one needs its chunks too): %w",
			id.Short(), v.Store, err)
	}
	if err != nil {
		return Served{}, fmt.Errorf("bootenv version %s: %w", id.Short(), err)
	}
	if !manifest.IsBootEnv(ver.Manifest.Meta.Name) {
		return Served{}, fmt.Errorf("version %s is of image %s: %w", id.Short(), ver.Manifest.Meta.Name, ErrNotBootEnv)
	}
	if ver.Manifest.DiskSize > MaxBundleSize {
		return Served{}, fmt.Errorf("bootenv version %s: %d bytes, more than a bundle may have: %w", id.Short(), ver.Manifest.DiskSize, ErrBadBundle)
	}
	sig, err := v.Store.GetSignature(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrCorrupt) {
		return Served{}, fmt.Errorf("signature of bootenv version %s: %w", id.Short(), err)
	}
	if err == nil {
		err = v.CentralKey.VerifyManifest(id, ver.Encoded, sig)
	}
	if err != nil {
		return Served{}, fmt.Errorf("bootenv version %s (%s) has no valid signature by central's key %s, so it is never served: %v: %w",
			id.Short(), ver.Manifest.Meta.Name, v.CentralKey.ID(), err, ErrUnsigned)
	}
	if err := os.MkdirAll(v.Dir, 0o755); err != nil {
		return Served{}, err
	}
	tmp, err := os.MkdirTemp(v.Dir, ".tmp-"+id.Short()+"-")
	if err != nil {
		return Served{}, err
	}
	defer os.RemoveAll(tmp)
	bundle := filepath.Join(tmp, ".bundle")
	if _, err := imageio.Export(ctx, v.Store, ver, bundle, imageio.ExportOptions{}); err != nil {
		return Served{}, fmt.Errorf("bootenv version %s: reading it from the store: %w", id.Short(), err)
	}
	s, err := extractBundle(bundle, tmp)
	if err != nil {
		return Served{}, fmt.Errorf("bootenv version %s: %w", id.Short(), err)
	}
	s.Version = id.String()
	b, _ := json.Marshal(s)
	if err := writeSynced(filepath.Join(tmp, InfoFile), b); err != nil {
		return Served{}, err
	}
	if err := os.Remove(bundle); err != nil {
		return Served{}, err
	}
	if err := syncDir(tmp); err != nil {
		return Served{}, err
	}
	dir := filepath.Join(v.Dir, id.String())
	if err := os.Rename(tmp, dir); err != nil {
		return Served{}, fmt.Errorf("bootenv version %s: %w", id.Short(), err)
	}
	if err := syncDir(v.Dir); err != nil {
		return Served{}, err
	}
	s.Dir = dir
	v.log().Info("bootenv version materialized", "version", id.Short(), "name", s.Info.Name, "kernel", s.Info.KernelVersion, "dir", dir)
	return s, nil
}

func extractBundle(path, dir string) (Served, error) {
	f, err := os.Open(path)
	if err != nil {
		return Served{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Served{}, err
	}
	b, err := OpenBundle(f, fi.Size())
	if err != nil {
		return Served{}, err
	}
	if err := b.Extract(dir); err != nil {
		return Served{}, err
	}
	return Served{Info: b.Info}, nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
