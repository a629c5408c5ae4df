package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Usage is what a store holds and what it could hold.
type Usage struct {
	// Used is the bytes of the store's objects (chunks, manifests, signatures…), as counted at
	// At.
	Used int64
	// Capacity is the size of the filesystem a directory store is on, and Available what it
	// has free for the store; both 0 when unknown (S3).
	Capacity, Available int64
	At                  time.Time
}

// Capacitor is implemented by backends that know how much room they have (a directory: its
// filesystem).
type Capacitor interface {
	// Capacity returns the size of the backend's filesystem and the bytes free for it.
	Capacity(ctx context.Context) (total, available int64, err error)
}

var _ Capacitor = (*Dir)(nil)

// Counting a store's bytes lists every object, so Usage keeps the count a while: at most
// UsageMaxAge old, or usageMinAge once the store changed (a version published or removed).
const (
	UsageMaxAge = time.Minute
	usageMinAge = 5 * time.Second
)

// usageCache is a store's last count of its bytes.
type usageCache struct {
	mu    sync.Mutex // held while counting: one count at a time
	used  int64
	at    time.Time
	stale bool
}

// Usage returns the bytes the store holds and, for a directory store, the size of its
// filesystem and what is free. The bytes are counted by listing the store, at most once per
// UsageMaxAge (sooner after a version was published or removed, but not more than once every
// few seconds); the capacity is asked of the filesystem each call (statfs, cheap). Status
// reports and the regions' metrics read it.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	u := Usage{}
	if c, ok := s.b.(Capacitor); ok {
		var err error
		if u.Capacity, u.Available, err = c.Capacity(ctx); err != nil {
			return Usage{}, err
		}
	}
	c := &s.usage
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	age := now.Sub(c.at)
	if c.at.IsZero() || age >= UsageMaxAge || (c.stale && age >= usageMinAge) {
		var used int64
		err := s.b.List(ctx, "", func(o ObjectInfo) error {
			used += o.Size
			return nil
		})
		if err != nil {
			return Usage{}, fmt.Errorf("counting the bytes of store %s: %w", s, err)
		}
		c.used, c.at, c.stale = used, now, false
	}
	u.Used, u.At = c.used, c.at
	return u, nil
}

// changed marks the store's byte count stale.
func (s *Store) changed() {
	s.usage.mu.Lock()
	s.usage.stale = true
	s.usage.mu.Unlock()
}

// Capacity returns the size of the directory's filesystem and the bytes free to unprivileged
// writers.
func (d *Dir) Capacity(ctx context.Context) (int64, int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.root, &st); err != nil {
		return 0, 0, d.ioErr("", err)
	}
	bs := int64(st.Bsize)
	return int64(st.Blocks) * bs, int64(st.Bavail) * bs, nil
}
