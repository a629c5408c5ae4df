package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"tms/internal/ctxtime"
)

// Lock timing. A holder rewrites its lock every LockRefresh; a lock not rewritten for LockStale
// belongs to a process that died and is ignored.
const (
	LockRefresh = 1 * time.Minute
	LockStale   = 5 * time.Minute
)

// Locks keep garbage collection from deleting chunks that an import has found in the store and
// is about to reference. Imports take a shared lock; garbage collection takes an exclusive one.
// Both write their lock first and then list the others (check after write), which is safe on any
// backend with read-after-write listing, S3 included.

// LockInfo describes a lock as stored.
type LockInfo struct {
	Kind    string    `json:"kind"` // "shared" or "exclusive"
	Purpose string    `json:"purpose"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Created time.Time `json:"created"`

	key     string
	modTime time.Time
}

func (l LockInfo) String() string {
	return fmt.Sprintf("%s (%s lock of pid %d on %s since %s)", l.Purpose, l.Kind, l.PID, l.Host, l.Created.Local().Format(time.DateTime))
}

// Lock is a held lock. Release it when done.
type Lock struct {
	s    *Store
	info LockInfo
	stop context.CancelFunc
	done chan struct{}
	mu   sync.Mutex
	lost error
}

func (s *Store) writeLock(ctx context.Context, kind, purpose string) (*Lock, error) {
	host, _ := os.Hostname()
	var rnd [8]byte
	rand.Read(rnd[:])
	info := LockInfo{Kind: kind, Purpose: purpose, Host: host, PID: os.Getpid(),
		Created: time.Now().UTC().Truncate(time.Second), key: "locks/" + kind + "-" + hex.EncodeToString(rnd[:]) + ".json"}
	b, _ := json.Marshal(info)
	if err := s.b.Put(ctx, info.key, b); err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l := &Lock{s: s, info: info, stop: stop, done: make(chan struct{})}
	go l.refresh(rctx, b)
	return l, nil
}

func (l *Lock) refresh(ctx context.Context, b []byte) {
	defer close(l.done)
	t := time.NewTicker(LockRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := l.s.b.Put(ctx, l.info.key, b); err != nil && ctx.Err() == nil {
				l.s.log.Warn("could not refresh store lock", "lock", l.info.key, "err", err)
				l.mu.Lock()
				l.lost = err
				l.mu.Unlock()
			}
		}
	}
}

// Err reports a failure to keep the lock fresh; a holder checks it before relying on the lock
// after a long time (a publish checks it before writing its manifest).
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Release removes the lock.
func (l *Lock) Release(ctx context.Context) error {
	l.stop()
	<-l.done
	return l.s.b.Delete(context.WithoutCancel(ctx), l.info.key)
}

// Locks lists the live locks, leaving out stale ones.
func (s *Store) Locks(ctx context.Context) ([]LockInfo, error) {
	var out []LockInfo
	var keys []ObjectInfo
	if err := s.b.List(ctx, "locks/", func(o ObjectInfo) error {
		keys = append(keys, o)
		return nil
	}); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	for _, o := range keys {
		b, err := s.getSmall(ctx, o.Key, maxLockFile)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		li, perr := ParseLock(b)
		if err != nil || perr != nil {
			// Not a lock tms wrote, or a damaged one: it keeps nobody out.
			s.log.Warn("ignoring an unreadable store lock", "lock", o.Key, "err", errors.Join(err, perr))
			continue
		}
		li.key, li.modTime = o.Key, o.ModTime
		if time.Since(o.ModTime) > LockStale || (li.Host == host && !processAlive(li.PID)) {
			continue
		}
		out = append(out, li)
	}
	return out, nil
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// LockShared takes a shared lock for purpose (an import, say), waiting while garbage collection
// holds the store. It reports the wait through waiting, if not nil.
func (s *Store) LockShared(ctx context.Context, purpose string, waiting func(holder LockInfo)) (*Lock, error) {
	for {
		if ex, err := s.exclusiveHolder(ctx, ""); err != nil {
			return nil, err
		} else if ex != nil {
			if waiting != nil {
				waiting(*ex)
			}
			if err := sleep(ctx, time.Second); err != nil {
				return nil, err
			}
			continue
		}
		l, err := s.writeLock(ctx, "shared", purpose)
		if err != nil {
			return nil, err
		}
		ex, err := s.exclusiveHolder(ctx, "")
		if err == nil && ex == nil {
			return l, nil
		}
		l.Release(ctx)
		if err != nil {
			return nil, err
		}
	}
}

func (s *Store) exclusiveHolder(ctx context.Context, except string) (*LockInfo, error) {
	locks, err := s.Locks(ctx)
	if err != nil {
		return nil, err
	}
	for _, li := range locks {
		if li.Kind == "exclusive" && li.key != except {
			return &li, nil
		}
	}
	return nil, nil
}

// LockExclusive takes the store for purpose (garbage collection). It does not wait: if anyone
// else holds a lock it fails with ErrBusy, naming them.
func (s *Store) LockExclusive(ctx context.Context, purpose string) (*Lock, error) {
	l, err := s.writeLock(ctx, "exclusive", purpose)
	if err != nil {
		return nil, err
	}
	locks, err := s.Locks(ctx)
	if err != nil {
		l.Release(ctx)
		return nil, err
	}
	var others []string
	for _, li := range locks {
		if li.key != l.info.key {
			others = append(others, li.String())
		}
	}
	if len(others) > 0 {
		l.Release(ctx)
		return nil, &Error{Kind: ErrBusy, Store: s.b.String(), What: "store", Err: fmt.Errorf("in use by %s; try again when it has finished", strings.Join(others, ", "))}
	}
	return l, nil
}

func sleep(ctx context.Context, d time.Duration) error { return ctxtime.Sleep(ctx, d) }
