package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"tms/manifest"
)

// The store's own small files (the marker, tags, stats, locks, holds) are read from bytes that
// a peer with write access or a damaged disk can change. Each has a parser here that is bounded
// (it refuses more bytes than tms ever writes, before decoding) and says what is wrong; each
// has a fuzz target.

// Size limits of the small files, far above what tms writes.
const (
	maxMarkerFile = 4096
	maxTagFile    = 2*manifest.IDLen + 64
	maxStatsFile  = 4096
	maxLockFile   = 4096
)

// LimitedGetter is implemented by backends that can refuse an object larger than a limit
// without reading it.
type LimitedGetter interface {
	// GetLimited is Get for an object of at most limit bytes; a larger one is ErrCorrupt.
	GetLimited(ctx context.Context, key string, limit int64) ([]byte, error)
}

// TooLarge is the error of a small file larger than it may be.
func TooLarge(backend, key string, size, limit int64) error {
	return &Error{Kind: ErrCorrupt, Store: backend, What: key, Err: fmt.Errorf("%d bytes, more than the %d it may have", size, limit)}
}

// getSmall reads one of the store's small files, refusing one larger than limit.
func (s *Store) getSmall(ctx context.Context, key string, limit int64) ([]byte, error) {
	if lg, ok := s.b.(LimitedGetter); ok {
		return lg.GetLimited(ctx, key, limit)
	}
	b, err := s.b.Get(ctx, key)
	if err == nil && int64(len(b)) > limit {
		return nil, TooLarge(s.b.String(), key, int64(len(b)), limit)
	}
	return b, err
}

// decodeSmall decodes one JSON value of at most limit bytes and nothing after it.
func decodeSmall(b []byte, limit int, what string, v any) error {
	if len(b) > limit {
		return fmt.Errorf("%s is %d bytes, more than %d", what, len(b), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s is not JSON: %w", what, err)
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the %s", what)
	}
	return nil
}

// parseMarker decodes tms-store.json.
func parseMarker(b []byte) (marker, error) {
	var m marker
	if err := decodeSmall(b, maxMarkerFile, "store marker", &m); err != nil {
		return m, err
	}
	if m.Format == "" {
		return m, errors.New("store marker has no format")
	}
	return m, nil
}

// parseTag decodes a tag file: a version id and a newline.
func parseTag(b []byte) (manifest.ID, error) {
	if len(b) > maxTagFile {
		return manifest.ID{}, fmt.Errorf("tag file is %d bytes, more than %d", len(b), maxTagFile)
	}
	return manifest.ParseID(string(bytes.TrimSpace(b)))
}

// parseStats decodes a stats file.
// ParseStats decodes a version's stats as a store keeps them (and a peer serves them): strict,
// bounded to MaxStatsJSON bytes, no negative counts.
func ParseStats(b []byte) (Stats, error) { return parseStats(b) }

// MaxStatsJSON bounds a version's stats object.
const MaxStatsJSON = maxStatsFile

func parseStats(b []byte) (Stats, error) {
	var st Stats
	if err := decodeSmall(b, maxStatsFile, "stats", &st); err != nil {
		return st, err
	}
	if st.StoredBytes < 0 || st.AddedBytes < 0 || st.AddedChunks < 0 {
		return st, fmt.Errorf("stats %+v has a negative count", st)
	}
	if st.AddedBytes > st.StoredBytes {
		return st, fmt.Errorf("stats say %d bytes were added of %d stored", st.AddedBytes, st.StoredBytes)
	}
	return st, nil
}

// ParseLock decodes a lock file.
func ParseLock(b []byte) (LockInfo, error) {
	var li LockInfo
	if err := decodeSmall(b, maxLockFile, "lock", &li); err != nil {
		return li, err
	}
	switch {
	case li.Kind != "shared" && li.Kind != "exclusive":
		return li, fmt.Errorf("lock kind %q is not shared or exclusive", clipString(li.Kind))
	case len(li.Purpose) > 1024 || !utf8.ValidString(li.Purpose):
		return li, errors.New("lock purpose is not UTF-8 of at most 1024 bytes")
	case len(li.Host) > 255 || !utf8.ValidString(li.Host):
		return li, errors.New("lock host is not UTF-8 of at most 255 bytes")
	case li.PID < 0:
		return li, fmt.Errorf("lock pid %d is negative", li.PID)
	}
	return li, nil
}

func clipString(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
