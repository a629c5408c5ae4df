package store

import (
	"errors"
	"fmt"
)

// The kinds of store error. Decide with errors.Is; every error a Store or Backend returns for an
// object wraps exactly one of them. "Missing" and "could not ask" are never confused: a failed
// login, a missing bucket or an I/O error is ErrUnavailable, never ErrNotFound.
var (
	// ErrNotFound: the store answered, and the object is not there.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt: the object is there but its bytes are not what its key promises.
	ErrCorrupt = errors.New("corrupt")
	// ErrUnavailable: the store could not be asked (network, credentials, permissions, disk).
	ErrUnavailable = errors.New("unavailable")
	// ErrHashMismatch: a chunk's bytes decompress but do not hash to its id (it comes with
	// ErrCorrupt; a frame that does not decompress is ErrCorrupt alone).
	ErrHashMismatch = errors.New("hash mismatch")
	// ErrBusy: a lock held by another process stands in the way.
	ErrBusy = errors.New("busy")
)

// Error is an error about one object of one store.
type Error struct {
	Kind  error  // ErrNotFound, ErrCorrupt, ErrUnavailable or ErrBusy
	Store string // the store, as Backend.String names it
	What  string // what the object is, for people: "chunk 3fa4…", "manifest 91bc…", "tag win11:latest"
	Err   error  // the cause, if any
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("store %s: %s: %v", e.Store, e.What, e.Kind)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap lets errors.Is match both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Kind returns which of the error kinds err is, or nil if none.
func Kind(err error) error {
	for _, k := range []error{ErrNotFound, ErrCorrupt, ErrBusy, ErrUnavailable} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
