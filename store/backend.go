package store

import (
	"context"
	"time"
)

// Backend is where a store keeps its objects: a local directory (Dir) or an S3 bucket
// (package s3store). Keys are slash-separated paths made by Store; a Backend does not interpret
// them. A Backend returns *Error values whose Kind is ErrNotFound for an object that is not
// there and ErrUnavailable for anything that kept it from answering.
type Backend interface {
	// Get returns the whole object.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores data under key atomically and durably: when Put returns nil the object survives
	// a crash, and readers see either the old object or the new one, never a mix.
	Put(ctx context.Context, key string, data []byte) error
	// Stat returns the object's size and modification time.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Delete removes the object; removing an object that is not there is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every object whose key starts with prefix, in no particular order.
	// An error from fn stops the listing and is returned as is.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// String names the store for people: a directory or s3://bucket/prefix.
	String() string
}

// ObjectInfo describes one object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Batcher is implemented by backends for which durability has a cost per object (a local
// filesystem's fsync). Objects put through a batch become visible and durable together at
// Commit, which costs one flush for the whole batch instead of one per object.
type Batcher interface {
	NewBatch() Batch
}

// Batch collects puts until Commit. Objects put in a batch are not visible before Commit.
type Batch interface {
	Put(ctx context.Context, key string, data []byte) error
	// Commit makes every object put so far durable, then visible. A batch can be committed
	// more than once; each commit covers the puts since the last.
	Commit(ctx context.Context) error
	// Abort drops the puts since the last commit.
	Abort()
}
