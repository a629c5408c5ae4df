// Package store keeps disk images as content-addressed, zstd-compressed chunks plus manifests,
// on a Backend: a local directory (Dir) or S3 (package s3store).
//
// Layout of a store, as object keys:
//
//	tms-store.json          marks the store and its format
//	chunks/ab/abcd…         one zstd frame per chunk, named by the hash of its uncompressed bytes
//	packs/….pack            (directory only) many chunks' frames in one file, with an index
//	manifests/91bc…         canonical manifests, named by version id
//	stats/91bc….json        what publishing a version added to this store (not part of its identity)
//	signatures/91bc…        central's signature of the version (package signing), when it has one
//	refs/NAME/TAG           the version id a tag points to
//	locks/…                 who is importing or collecting garbage right now
//	holds/91bc…/…           which tasks use a version right now, and until when (see Hold)
//	removing/91bc….json     a Remove of the version is deciding (see Hold)
//
// Every chunk read is checked against its id. Publishing is ordered: chunks first (durable), then
// the manifest, then the tag, so a reader never sees a version whose chunks are not all there.
//
//	b, _ := store.NewDir("/srv/tms/store")
//	s := store.New(b, store.Options{})
//	if err := s.Init(ctx); err != nil { … }
//	v, err := s.Resolve(ctx, ref)
//
// A task that uses a version holds it, so that Remove and GC leave it alone (see Hold):
//
//	err := s.Hold(ctx, v.ID, "deploy/region-b/lab/pc-07", deadline) // again, later, to renew
//	defer s.Release(ctx, v.ID, "deploy/region-b/lab/pc-07")
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"tms/manifest"
	"tms/signing"
)

// MarkerKey is the object that marks a store.
const MarkerKey = "tms-store.json"

// StoreFormat is the layout version written to the marker.
const StoreFormat = "tms.store.v1"

// Options tune a Store.
type Options struct {
	// Level is the zstd level chunks are compressed at (0: DefaultLevel).
	Level zstd.EncoderLevel
	// Log receives what the store does in the background (lock refreshes, cleanup).
	Log *slog.Logger
}

// Store is a chunk and image store on one Backend. It is safe for concurrent use.
type Store struct {
	b     Backend
	codec *Codec
	log   *slog.Logger
	usage usageCache
}

// New returns a store on b.
func New(b Backend, opts Options) *Store {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Store{b: b, codec: NewCodec(opts.Level), log: opts.Log}
}

// Backend returns the backend the store is on.
func (s *Store) Backend() Backend { return s.b }

// String names the store.
func (s *Store) String() string { return s.b.String() }

type marker struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
}

// Init marks the backend as a tms store if it is not one yet.
func (s *Store) Init(ctx context.Context) error {
	err := s.Check(ctx)
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	b, _ := json.Marshal(marker{Format: StoreFormat, Created: time.Now().UTC().Truncate(time.Second)})
	return s.b.Put(ctx, MarkerKey, b)
}

// Check makes sure the backend holds a tms store of a format this tms reads. A backend with no
// marker gives ErrNotFound.
func (s *Store) Check(ctx context.Context) error {
	b, err := s.getSmall(ctx, MarkerKey, maxMarkerFile)
	if errors.Is(err, ErrNotFound) {
		return &Error{Kind: ErrNotFound, Store: s.b.String(), What: "tms store", Err: errors.New("no " + MarkerKey + " here; import an image to create a store")}
	}
	if err != nil {
		return err
	}
	m, err := parseMarker(b)
	if err != nil {
		return &Error{Kind: ErrCorrupt, Store: s.b.String(), What: MarkerKey, Err: err}
	}
	if m.Format != StoreFormat {
		return &Error{Kind: ErrUnavailable, Store: s.b.String(), What: MarkerKey, Err: fmt.Errorf("store format %q is not %q: use a tms that knows it", m.Format, StoreFormat)}
	}
	return nil
}

func manifestKey(id manifest.ID) string { return "manifests/" + id.String() }
func statsKey(id manifest.ID) string    { return "stats/" + id.String() + ".json" }
func refKey(name, tag string) string    { return "refs/" + name + "/" + tag }

// SignatureKey is the object holding version id's signature.
func SignatureKey(id manifest.ID) string { return "signatures/" + id.String() }

// Version is a manifest with its id, as read from a store.
type Version struct {
	ID       manifest.ID
	Manifest *manifest.Manifest
	// Encoded is the manifest's canonical encoding.
	Encoded []byte
}

// GetManifest reads version id and checks that its bytes hash to id.
func (s *Store) GetManifest(ctx context.Context, id manifest.ID) (*Version, error) {
	b, err := s.b.Get(ctx, manifestKey(id))
	if err != nil {
		return nil, err
	}
	return s.decodeVersion(id, b)
}

// HasVersion reports whether version id is published in the store, without reading it: for
// a caller that polls. A store that cannot be asked is an error, never false.
func (s *Store) HasVersion(ctx context.Context, id manifest.ID) (bool, error) {
	_, err := s.b.Stat(ctx, manifestKey(id))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *Store) decodeVersion(id manifest.ID, b []byte) (*Version, error) {
	m, err := manifest.Decode(b)
	if err != nil {
		return nil, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: "manifest " + id.String(), Err: err}
	}
	if got := manifest.VersionID(m.Hash, b); got != id {
		return nil, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: "manifest " + id.String(),
			Err: fmt.Errorf("content hashes to %s", got.Short())}
	}
	return &Version{ID: id, Manifest: m, Encoded: b}, nil
}

// Stats is what publishing a version added to one store. It is kept beside the manifest and is
// not part of the version's identity.
type Stats struct {
	// StoredBytes is the compressed size of the version's distinct non-zero chunks.
	StoredBytes int64 `json:"stored_bytes"`
	// AddedBytes is the compressed size of the chunks the store did not hold before.
	AddedBytes int64 `json:"added_bytes"`
	// AddedChunks counts those chunks.
	AddedChunks int64 `json:"added_chunks"`
}

// PutVersion publishes an encoded manifest whose chunks are all durably stored, with its stats.
// It returns the version id.
func (s *Store) PutVersion(ctx context.Context, encoded []byte, st Stats) (*Version, error) {
	m, err := manifest.Decode(encoded)
	if err != nil {
		return nil, err
	}
	id := manifest.VersionID(m.Hash, encoded)
	sb, _ := json.Marshal(st)
	if err := s.b.Put(ctx, statsKey(id), sb); err != nil {
		return nil, err
	}
	if err := s.b.Put(ctx, manifestKey(id), encoded); err != nil {
		return nil, err
	}
	s.changed()
	return &Version{ID: id, Manifest: m, Encoded: encoded}, nil
}

// GetStats returns the stats saved when version id was published here; ErrNotFound if none were.
func (s *Store) GetStats(ctx context.Context, id manifest.ID) (Stats, error) {
	b, err := s.getSmall(ctx, statsKey(id), maxStatsFile)
	if err != nil {
		return Stats{}, err
	}
	st, err := parseStats(b)
	if err != nil {
		return Stats{}, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: "stats of " + id.String(), Err: err}
	}
	return st, nil
}

// PutSignature stores central's signature of version id. A copy writes it before the manifest,
// so a published version carries its signature whenever its source had one; central's
// signature of a captured version arrives after the manifest. The store does not check the
// signature: whoever uses the version does, with central's public key.
func (s *Store) PutSignature(ctx context.Context, id manifest.ID, sig signing.Signature) error {
	if err := sig.Check(); err != nil {
		return fmt.Errorf("signature of %s: %w", id.Short(), err)
	}
	return s.b.Put(ctx, SignatureKey(id), sig.Encode())
}

// GetSignature returns the signature stored for version id: ErrNotFound if the version is not
// signed here, ErrCorrupt if the object is not a well-formed signature.
func (s *Store) GetSignature(ctx context.Context, id manifest.ID) (signing.Signature, error) {
	b, err := s.b.Get(ctx, SignatureKey(id))
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			se.What = "signature of " + id.Short()
		}
		return signing.Signature{}, err
	}
	sig, err := signing.DecodeSignature(b)
	if err != nil {
		return sig, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: "signature of " + id.String(), Err: err}
	}
	return sig, nil
}

// GetTag returns the version id NAME:TAG points to.
func (s *Store) GetTag(ctx context.Context, name, tag string) (manifest.ID, error) {
	b, err := s.getSmall(ctx, refKey(name, tag), maxTagFile)
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			se.What = "tag " + name + ":" + tag
		}
		return manifest.ID{}, err
	}
	id, err := parseTag(b)
	if err != nil {
		return manifest.ID{}, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: "tag " + name + ":" + tag, Err: err}
	}
	return id, nil
}

// SetTag points NAME:TAG at version id, which must be published.
func (s *Store) SetTag(ctx context.Context, name, tag string, id manifest.ID) error {
	if err := manifest.ValidateName(name); err != nil {
		return err
	}
	if err := manifest.ValidateTag(tag); err != nil {
		return err
	}
	return s.b.Put(ctx, refKey(name, tag), []byte(id.String()+"\n"))
}

// DeleteTag removes NAME:TAG.
func (s *Store) DeleteTag(ctx context.Context, name, tag string) error {
	return s.b.Delete(ctx, refKey(name, tag))
}

// Tag is one tag and the version it points to.
type Tag struct {
	Name, Tag string
	Version   manifest.ID
}

// Tags lists every tag in the store, sorted by name and tag.
func (s *Store) Tags(ctx context.Context) ([]Tag, error) {
	var keys []string
	if err := s.b.List(ctx, "refs/", func(o ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		return nil, err
	}
	var tags []Tag
	for _, k := range keys {
		parts := strings.Split(strings.TrimPrefix(k, "refs/"), "/")
		if len(parts) != 2 || manifest.ValidateName(parts[0]) != nil || manifest.ValidateTag(parts[1]) != nil {
			continue // not a tag tms wrote
		}
		id, err := s.GetTag(ctx, parts[0], parts[1])
		if errors.Is(err, ErrNotFound) {
			continue // removed while we listed
		}
		if err != nil {
			return nil, err
		}
		tags = append(tags, Tag{Name: parts[0], Tag: parts[1], Version: id})
	}
	sort.Slice(tags, func(i, j int) bool {
		if tags[i].Name != tags[j].Name {
			return tags[i].Name < tags[j].Name
		}
		return tags[i].Tag < tags[j].Tag
	})
	return tags, nil
}

// VersionIDs lists the ids of every published version.
func (s *Store) VersionIDs(ctx context.Context) ([]manifest.ID, error) {
	var ids []manifest.ID
	err := s.b.List(ctx, "manifests/", func(o ObjectInfo) error {
		id, err := manifest.ParseID(strings.TrimPrefix(o.Key, "manifests/"))
		if err != nil {
			return nil // not a manifest tms wrote
		}
		ids = append(ids, id)
		return nil
	})
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	return ids, err
}

// Resolve finds the version a reference names.
func (s *Store) Resolve(ctx context.Context, ref manifest.Ref) (*Version, error) {
	if ref.Version == "" {
		id, err := s.GetTag(ctx, ref.Name, ref.Tag)
		if errors.Is(err, ErrNotFound) {
			return nil, &Error{Kind: ErrNotFound, Store: s.b.String(), What: "image " + ref.String()}
		}
		if err != nil {
			return nil, err
		}
		return s.GetManifest(ctx, id)
	}
	ids, err := s.VersionIDs(ctx)
	if err != nil {
		return nil, err
	}
	var match []*Version
	for _, id := range ids {
		if !strings.HasPrefix(id.String(), ref.Version) {
			continue
		}
		v, err := s.GetManifest(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if v.Manifest.Meta.Name == ref.Name {
			match = append(match, v)
		}
	}
	switch len(match) {
	case 0:
		return nil, &Error{Kind: ErrNotFound, Store: s.b.String(), What: "image " + ref.String()}
	case 1:
		return match[0], nil
	}
	var names []string
	for _, v := range match {
		names = append(names, v.ID.Short())
	}
	return nil, fmt.Errorf("image %s: version prefix %q is ambiguous (%s): give more digits", ref, ref.Version, strings.Join(names, ", "))
}

// Removed says what Remove took away.
type Removed struct {
	Versions []manifest.ID
	Tags     []Tag
}

// Remove deletes what a reference names:
//   - NAME (no tag given): the whole image, every tag and every version of NAME;
//   - NAME:TAG: the tag, and the version it pointed to unless another tag still points to it;
//   - NAME@VERSION: the version, and every tag that points to it.
//
// Chunks are freed by the next garbage collection. If a version it would delete is held (see
// Hold), Remove deletes nothing and returns a *HeldError naming the holders.
func (s *Store) Remove(ctx context.Context, ref manifest.Ref) (Removed, error) {
	defer s.changed()
	var out Removed
	tags, err := s.Tags(ctx)
	if err != nil {
		return out, err
	}
	var versions []manifest.ID
	switch {
	case !ref.Explicit:
		ids, err := s.VersionIDs(ctx)
		if err != nil {
			return out, err
		}
		for _, id := range ids {
			v, err := s.GetManifest(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return out, err
			}
			if v.Manifest.Meta.Name == ref.Name {
				versions = append(versions, id)
			}
		}
		for _, t := range tags {
			if t.Name == ref.Name || slices.Contains(versions, t.Version) {
				out.Tags = append(out.Tags, t)
			}
		}
		if len(versions) == 0 && len(out.Tags) == 0 {
			return out, &Error{Kind: ErrNotFound, Store: s.b.String(), What: "image " + ref.Name}
		}
	case ref.Version == "":
		v, err := s.Resolve(ctx, ref)
		if err != nil {
			return out, err
		}
		shared := false
		for _, t := range tags {
			if t.Name == ref.Name && t.Tag == ref.Tag {
				out.Tags = append(out.Tags, t)
			} else if t.Version == v.ID {
				shared = true
			}
		}
		if !shared {
			versions = append(versions, v.ID)
		}
	default:
		v, err := s.Resolve(ctx, ref)
		if err != nil {
			return out, err
		}
		versions = append(versions, v.ID)
		for _, t := range tags {
			if t.Version == v.ID {
				out.Tags = append(out.Tags, t)
			}
		}
	}
	// A version in use stays: a deploy streaming it would fail half-way through.
	if len(versions) > 0 {
		unmark, err := s.markRemoving(ctx, versions)
		if err != nil {
			out.Tags = nil
			return out, err
		}
		defer unmark()
	}
	// Tags first: a tag must never point to a version that is gone.
	for _, t := range out.Tags {
		if err := s.DeleteTag(ctx, t.Name, t.Tag); err != nil {
			return out, err
		}
	}
	for _, id := range versions {
		if err := s.b.Delete(ctx, manifestKey(id)); err != nil {
			return out, err
		}
		if err := s.b.Delete(ctx, statsKey(id)); err != nil {
			return out, err
		}
		if err := s.b.Delete(ctx, SignatureKey(id)); err != nil {
			return out, err
		}
		out.Versions = append(out.Versions, id)
	}
	return out, nil
}
