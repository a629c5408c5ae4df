package auth

import (
	"sync"
	"time"
)

// Limiter bounds attempts per key (a user name, a client address): at most Burst attempts, one
// more every Every. It forgets keys that have been idle long enough to be full again, and holds
// at most MaxKeys (then refuses new keys until some are forgotten, rather than grow).
type Limiter struct {
	Burst   int
	Every   time.Duration
	MaxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Allow takes one attempt for key at now, and reports whether there was one left; when not, it
// says how long until the next.
func (l *Limiter) Allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*bucket{}
	}
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys() {
			l.forget(now)
			if len(l.buckets) >= l.maxKeys() {
				return false, l.Every
			}
		}
		b = &bucket{tokens: float64(l.Burst), last: now}
		l.buckets[key] = b
	}
	b.tokens = min(float64(l.Burst), b.tokens+float64(now.Sub(b.last))/float64(l.Every))
	b.last = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.Every))
	}
	b.tokens--
	return true, 0
}

func (l *Limiter) maxKeys() int {
	if l.MaxKeys <= 0 {
		return 10000
	}
	return l.MaxKeys
}

// forget drops full buckets.
func (l *Limiter) forget(now time.Time) {
	full := time.Duration(l.Burst) * l.Every
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
}
