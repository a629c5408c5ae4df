package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"tms/manifest"
)

// A pin keeps a version in the store until an admin unpins it: a hold by PinHolder that does
// not expire (MaxHoldDuration bounds holds, which tasks renew; a pin is an admin's standing
// decision, so it lives apart, one object a version):
//
//	pins/<version>.json   {"version":…, "by":…, "at":…, "host":…}
//
// Holds and AllHolds list a version's pin with its holds, so Remove refuses a pinned version
// (a *HeldError naming the pin), eviction passes it by and garbage collection keeps its chunks.
// Pin orders its writes as Hold does (write, then look for a removal marker and the manifest),
// so a pin and a removal that overlap never both succeed.

// PinHolder is the holder name of a pin, as HeldError and status listings show it.
const PinHolder = "pin"

// maxPinBy bounds who pinned a version, as tms writes it and accepts it.
const maxPinBy = 128

type pinFile struct {
	Version manifest.ID `json:"version"`
	By      string      `json:"by,omitempty"`
	At      time.Time   `json:"at"`
	Host    string      `json:"host,omitempty"`
}

func pinKey(id manifest.ID) string { return "pins/" + id.String() + ".json" }

// ParsePin decodes a pin object as stored under key (pins/<version>.json) into the Hold it
// stands for. It is strict and bounded like ParseHold.
func ParsePin(key string, b []byte) (Hold, error) {
	if len(b) > maxHoldFile {
		return Hold{}, fmt.Errorf("pin is %d bytes, more than %d", len(b), maxHoldFile)
	}
	var p pinFile
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&p); err != nil {
		return Hold{}, fmt.Errorf("pin is not JSON: %w", err)
	}
	if dec.More() {
		return Hold{}, errors.New("trailing data after the pin")
	}
	if err := validateBy(p.By); err != nil {
		return Hold{}, err
	}
	if len(p.Host) > 255 {
		return Hold{}, fmt.Errorf("host is %d bytes long, more than 255", len(p.Host))
	}
	if want := pinKey(p.Version); key != want {
		return Hold{}, fmt.Errorf("pin of %s belongs at %s", p.Version.Short(), want)
	}
	return Hold{Version: p.Version, Holder: PinHolder, Pinned: true, By: p.By, Host: p.Host, Renewed: p.At}, nil
}

// ValidatePinBy checks who pins: empty, or up to 128 bytes of printable UTF-8.
func ValidatePinBy(by string) error { return validateBy(by) }

func validateBy(by string) error {
	if len(by) > maxPinBy {
		return fmt.Errorf("pinned by a name of %d bytes, more than %d", len(by), maxPinBy)
	}
	if !utf8.ValidString(by) {
		return errors.New("pinned by a name that is not UTF-8")
	}
	for _, r := range by {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("pinned by %q, which has a character that is not printable", by)
		}
	}
	return nil
}

// Pin keeps version id in the store until Unpin; by says who pinned it (may be empty). Pinning
// a pinned version records the new pinner. The version must be published: Pin gives ErrNotFound
// otherwise (or while a Remove is deleting it).
func (s *Store) Pin(ctx context.Context, id manifest.ID, by string) error {
	if err := validateBy(by); err != nil {
		return fmt.Errorf("pin of %s: %w", id.Short(), err)
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(pinFile{Version: id, By: by, At: time.Now().UTC().Truncate(time.Second), Host: host})
	key := pinKey(id)
	_, err := s.b.Stat(ctx, key)
	already := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return s.claim(ctx, id, key, b, already, false, "pin")
}

// Unpin drops the pin of version id and reports whether there was one.
func (s *Store) Unpin(ctx context.Context, id manifest.ID) (bool, error) {
	_, err := s.b.Stat(ctx, pinKey(id))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, s.b.Delete(ctx, pinKey(id))
}

// GetPin returns version id's pin as a Hold; ErrNotFound if it is not pinned, ErrCorrupt if
// the pin object cannot be read (nobody can tell whether it stands).
func (s *Store) GetPin(ctx context.Context, id manifest.ID) (Hold, error) {
	key := pinKey(id)
	b, err := s.getSmall(ctx, key, maxHoldFile)
	if errors.Is(err, ErrCorrupt) {
		return Hold{}, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: key, Err: errors.New("larger than a pin may be (delete the object, then pin the version again)")}
	}
	if err != nil {
		return Hold{}, err
	}
	h, err := ParsePin(key, b)
	if err != nil {
		return Hold{}, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: key, Err: fmt.Errorf("%w (delete the object, then pin the version again)", err)}
	}
	return h, nil
}

// Pins lists every pin in the store, by version.
func (s *Store) Pins(ctx context.Context) ([]Hold, error) {
	var ids []manifest.ID
	if err := s.b.List(ctx, "pins/", func(o ObjectInfo) error {
		id, err := manifest.ParseID(strings.TrimSuffix(strings.TrimPrefix(o.Key, "pins/"), ".json"))
		if err != nil || pinKey(id) != o.Key {
			return nil // not a pin tms wrote
		}
		ids = append(ids, id)
		return nil
	}); err != nil {
		return nil, err
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	var out []Hold
	for _, id := range ids {
		h, err := s.GetPin(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // unpinned while we listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}
