// Package wanrate paces a region's WAN transfers: the bytes it pulls from peer regions and from
// central's relay, the bytes it pushes to the relay, and the bytes its data endpoint serves to
// peer regions, so that a school's WAN keeps room for everything else.
//
// A Bucket is a token bucket with small bursts, shared by every transfer of the region; its cap
// may change at any moment (a pushed setting, a time-of-day window) and the change applies at
// once to those waiting. Bytes are paced where they move: a Reader around a response body, a
// Writer around a response, an Objects around whole objects read from or written to a store.
// A transfer with a cap of its own chains a Bucket of its own with the region's (All).
//
//	region := wanrate.NewBucket(20_000_000, nil) // 20 MB/s
//	go region.Follow(ctx, live.WANRateAt, time.Second, nil)
//	lim := wanrate.All(wanrate.NewBucket(in.Rate, nil), region)
//	body := wanrate.NewReader(ctx, resp.Body, lim)
package wanrate

import (
	"context"
	"io"
	"math"
	"net/http"
	"sync"
	"time"
)

// Limiter paces bytes: Take waits until n more bytes may move (or ctx ends, when it returns
// ctx.Err() and takes nothing); Give returns bytes taken that did not move.
type Limiter interface {
	Take(ctx context.Context, n int64) error
	Give(n int64)
}

// Clock is a Bucket's time: the system's (nil) or a test's.
type Clock interface {
	Now() time.Time
	// Timer returns a channel that receives once d has passed, and a function that stops it.
	Timer(d time.Duration) (<-chan time.Time, func())
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Timer(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// Burst is what a Bucket at rate lets through at once after standing idle: 50 ms worth (at
// least 4 KiB). Small next to a second, so the cap holds within 5% over any second; large
// enough that a transfer whose goroutines were not scheduled for a moment (a busy machine, a
// pause of the garbage collector) does not lose its share of the cap.
func Burst(rate int64) int64 { return max(rate/20, 4<<10) }

// Bucket is a token bucket of bytes. Takers are served in the order they came, each waiting
// until the bytes taken before it and its own have been earned at the rate, so a cap holds over
// any window longer than a burst however many transfers share the bucket; a taker may take
// more than a burst (a whole object) and waits accordingly. The zero Bucket is not usable:
// NewBucket makes one. Its methods may be called from any goroutine.
type Bucket struct {
	clock Clock

	mu   sync.Mutex
	rate int64 // bytes a second; 0: no cap
	// taken counts the bytes taken; credit the bytes the rate earned (with frac, the fraction
	// of a byte), never more than a burst ahead of taken. A taker whose bytes end at taken+n
	// goes when credit reaches that.
	taken, credit int64
	frac          float64
	last          time.Time     // when credit was last brought up to date
	changed       chan struct{} // closed when waiters must look again (a new rate, a refund)
}

// NewBucket returns a Bucket capped at rate bytes a second (0: no cap), empty: pacing starts
// at once. A nil clock is the system's.
func NewBucket(rate int64, clock Clock) *Bucket {
	if clock == nil {
		clock = systemClock{}
	}
	b := &Bucket{clock: clock, rate: max(rate, 0), changed: make(chan struct{})}
	b.last = clock.Now()
	return b
}

// Rate is the cap, in bytes a second (0: none).
func (b *Bucket) Rate() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate
}

// SetRate changes the cap (0: none). Takers already waiting go by the new cap from now on.
func (b *Bucket) SetRate(rate int64) {
	rate = max(rate, 0)
	b.mu.Lock()
	defer b.mu.Unlock()
	if rate == b.rate {
		return
	}
	b.advance()
	if rate == 0 || b.rate == 0 {
		// Uncapped, nobody owes anything; newly capped, pacing starts from here.
		b.credit, b.frac = b.taken, 0
	}
	b.rate = rate
	b.wake()
}

// advance brings credit up to now. b.mu is held.
func (b *Bucket) advance() {
	now := b.clock.Now()
	dt := now.Sub(b.last).Seconds()
	b.last = now
	if b.rate == 0 {
		b.credit, b.frac = b.taken, 0
		return
	}
	if dt <= 0 {
		return
	}
	earned := float64(b.rate)*dt + b.frac
	ceiling := b.taken + Burst(b.rate)
	if earned >= float64(ceiling-b.credit) {
		b.credit, b.frac = ceiling, 0
		return
	}
	whole := math.Floor(earned)
	b.credit += int64(whole)
	b.frac = earned - whole
}

// wake makes every waiter look again. b.mu is held.
func (b *Bucket) wake() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Take waits until n more bytes may go, in turn after the bytes taken before.
func (b *Bucket) Take(ctx context.Context, n int64) error {
	if n <= 0 {
		return ctx.Err()
	}
	b.mu.Lock()
	b.advance()
	b.taken += n
	end := b.taken
	for {
		// A thousandth of a byte short is float rounding, not a reason to wait.
		if b.rate == 0 || float64(end-b.credit)-b.frac <= 1e-3 {
			if b.rate == 0 {
				b.credit = b.taken
			}
			b.mu.Unlock()
			return nil
		}
		wait := time.Duration(math.Ceil((float64(end-b.credit) - b.frac) / float64(b.rate) * float64(time.Second)))
		changed := b.changed
		b.mu.Unlock()
		timer, stop := b.clock.Timer(max(wait, time.Nanosecond))
		select {
		case <-ctx.Done():
			stop()
			b.mu.Lock()
			b.credit += n // as if these bytes had never been taken: those behind go sooner
			b.wake()
			b.mu.Unlock()
			return ctx.Err()
		case <-timer:
		case <-changed:
			stop()
		}
		b.mu.Lock()
		b.advance()
	}
}

// Give returns n bytes taken that did not move (a read that came back short).
func (b *Bucket) Give(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance()
	b.credit = min(b.credit+n, b.taken+Burst(b.rate))
	if b.rate == 0 {
		b.credit = b.taken
	}
}

// Follow sets the bucket's cap to capAt(now) every interval (and once at the start) until ctx
// ends: the cap of a time-of-day window changes as the day goes on. A nil clock is the
// system's.
func (b *Bucket) Follow(ctx context.Context, capAt func(time.Time) int64, every time.Duration, clock Clock) {
	if clock == nil {
		clock = systemClock{}
	}
	for {
		b.SetRate(capAt(clock.Now()))
		timer, stop := clock.Timer(every)
		select {
		case <-ctx.Done():
			stop()
			return
		case <-timer:
		}
	}
}

// chain is several limiters: bytes go when all of them let them.
type chain []Limiter

// All returns a Limiter that lets bytes go when every one of ls does (nil ones are left out):
// a transfer's own cap with its region's. Nil if there is none.
func All(ls ...Limiter) Limiter {
	var c chain
	for _, l := range ls {
		if l == nil {
			continue
		}
		if b, ok := l.(*Bucket); ok && b == nil {
			continue
		}
		c = append(c, l)
	}
	switch len(c) {
	case 0:
		return nil
	case 1:
		return c[0]
	}
	return c
}

func (c chain) Take(ctx context.Context, n int64) error {
	for i, l := range c {
		if err := l.Take(ctx, n); err != nil {
			for _, g := range c[:i] {
				g.Give(n)
			}
			return err
		}
	}
	return nil
}

func (c chain) Give(n int64) {
	for _, l := range c {
		l.Give(n)
	}
}

// Piece is the most a Reader or Writer moves per Take: small enough that the bytes on the wire
// follow the cap closely, large enough that taking costs little.
const Piece = 32 << 10

// Reader paces the reads of r by l; ctx bounds the waits.
type Reader struct {
	ctx context.Context
	r   io.Reader
	l   Limiter
}

// NewReader returns r paced by l (r itself if l is nil).
func NewReader(ctx context.Context, r io.Reader, l Limiter) io.Reader {
	if l == nil {
		return r
	}
	return &Reader{ctx: ctx, r: r, l: l}
}

// Read takes up to Piece bytes from the limiter, reads at most that, and gives back what the
// read did not fill.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return r.r.Read(p)
	}
	want := min(len(p), Piece)
	if err := r.l.Take(r.ctx, int64(want)); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p[:want])
	if n < want {
		r.l.Give(int64(want - n))
	}
	return n, err
}

// ResponseWriter paces the writes of an HTTP response by a Limiter.
type ResponseWriter struct {
	http.ResponseWriter
	ctx context.Context
	l   Limiter
}

// NewResponseWriter returns w with its body paced by l (w itself if l is nil); ctx (the
// request's) bounds the waits.
func NewResponseWriter(ctx context.Context, w http.ResponseWriter, l Limiter) http.ResponseWriter {
	if l == nil {
		return w
	}
	return &ResponseWriter{ResponseWriter: w, ctx: ctx, l: l}
}

// Write writes p a Piece at a time, each once the limiter lets it go.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), Piece)]
		if err := w.l.Take(w.ctx, int64(len(piece))); err != nil {
			return written, err
		}
		n, err := w.ResponseWriter.Write(piece)
		written += n
		if err != nil {
			w.l.Give(int64(len(piece) - n))
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Unwrap lets http.ResponseController reach the connection (the region's per-request deadlines).
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Objects paces whole objects read from or written to a store whose interface moves them as
// byte slices (the relay): a write takes the object's bytes before it goes; a read takes the
// object's size if known (a Stat before), else what objects weighed lately, before it goes,
// and settles the difference once the object is in. Taken before, not after, so that many
// reads at once do not all arrive in one burst. Bytes taken and not used (a guess too large,
// a read that failed) are given back, but only a burst of them stays: the time spent waiting
// for them is lost, so give sizes where they are known.
// The zero Objects with a Limit is ready; a nil *Objects or Limit paces nothing.
type Objects struct {
	Limit Limiter

	mu  sync.Mutex
	avg float64 // the bytes of recent objects read, a moving average
}

// firstGuess is what a read of unknown size takes before any object was read: the default
// chunk size.
const firstGuess = 256 << 10

// Get paces get, which reads one object of size bytes (-1: not known, what recent objects
// weighed is taken and the difference settled when the object is in; 0: all settled after).
func (o *Objects) Get(ctx context.Context, size int64, get func() ([]byte, error)) ([]byte, error) {
	if o == nil || o.Limit == nil {
		return get()
	}
	guess := size
	if guess < 0 {
		o.mu.Lock()
		guess = int64(o.avg)
		o.mu.Unlock()
		if guess <= 0 {
			guess = firstGuess
		}
	}
	if guess > 0 {
		if err := o.Limit.Take(ctx, guess); err != nil {
			return nil, err
		}
	}
	b, err := get()
	n := int64(len(b))
	if err != nil {
		n = 0
	}
	switch {
	case n > guess:
		// Settle after the fact: the next reads wait for it.
		if terr := o.Limit.Take(ctx, n-guess); terr != nil && err == nil {
			return nil, terr
		}
	case n < guess:
		o.Limit.Give(guess - n)
	}
	if n > 0 {
		o.mu.Lock()
		if o.avg == 0 {
			o.avg = float64(n)
		} else {
			o.avg = 0.8*o.avg + 0.2*float64(n)
		}
		o.mu.Unlock()
	}
	return b, err
}

// Put paces put, which writes one object of n bytes: it goes once its bytes may.
func (o *Objects) Put(ctx context.Context, n int64, put func() error) error {
	if o != nil && o.Limit != nil {
		if err := o.Limit.Take(ctx, n); err != nil {
			return err
		}
	}
	return put()
}
