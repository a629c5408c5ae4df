package wanrate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"testing"
	"time"

	"tms/settings"
)

// fakeClock is a clock the test moves: timers fire when Advance passes them.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []*fakeTimer
	added   chan struct{} // closed when a timer is added
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t, added: make(chan struct{})} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Timer(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.pending = append(c.pending, t)
	close(c.added)
	c.added = make(chan struct{})
	return t.ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, p := range c.pending {
			if p == t {
				c.pending = append(c.pending[:i], c.pending[i+1:]...)
				return
			}
		}
	}
}

// Advance moves the clock by d and fires the timers it passes.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.pending[:0]
	for _, t := range c.pending {
		if !t.at.After(c.now) {
			t.ch <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.pending = kept
}

// next is when the earliest timer fires (zero if none).
func (c *fakeClock) next() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n time.Time
	for _, t := range c.pending {
		if n.IsZero() || t.at.Before(n) {
			n = t.at
		}
	}
	return n
}

// waitPending waits (in real time) until n timers are pending: every taker is waiting.
func (c *fakeClock) waitPending(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		got, added := len(c.pending), c.added
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-added:
		case <-deadline:
			t.Fatalf("%d timers pending after 10 s; want %d", got, n)
		}
	}
}

var t0 = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

// sample is bytes that went at a moment of the fake clock.
type sample struct {
	at time.Time
	n  int64
}

// run starts takers goroutines taking pieces from l until ctx ends, and returns what went.
func run(ctx context.Context, clock *fakeClock, l Limiter, takers int, piece int64) (wait func() []sample) {
	var mu sync.Mutex
	var got []sample
	var wg sync.WaitGroup
	for range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if err := l.Take(ctx, piece); err != nil {
					return
				}
				at := clock.Now()
				mu.Lock()
				got = append(got, sample{at, piece})
				mu.Unlock()
			}
		}()
	}
	return func() []sample {
		wg.Wait()
		sort.Slice(got, func(i, j int) bool { return got[i].at.Before(got[j].at) })
		return got
	}
}

// armed is the one timer pending: a lone waiter's.
func (c *fakeClock) armed(t *testing.T) *fakeTimer {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 1 {
		t.Fatalf("%d timers pending; want the one waiter's", len(c.pending))
	}
	return c.pending[0]
}

// waitRearmed waits until the one waiter, whose timer was before, has set a timer for its new
// wake-up (after a wake), or has gone.
func waitRearmed(t *testing.T, c *fakeClock, before *fakeTimer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		rearmed := len(c.pending) == 0 || len(c.pending) == 1 && c.pending[0] != before
		c.mu.Unlock()
		if rearmed {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
	t.Fatal("the waiter did not look again")
}

// drive moves the clock from timer to timer, each time every taker waits, until d has passed.
func drive(t *testing.T, clock *fakeClock, takers int, d time.Duration) {
	t.Helper()
	end := clock.Now().Add(d)
	for clock.Now().Before(end) {
		clock.waitPending(t, takers)
		next := clock.next()
		if next.After(end) {
			next = end
		}
		clock.Advance(next.Sub(clock.Now()))
	}
}

// bytesIn sums the samples in [from, to).
func bytesIn(s []sample, from, to time.Time) int64 {
	var n int64
	for _, x := range s {
		if !x.at.Before(from) && x.at.Before(to) {
			n += x.n
		}
	}
	return n
}

func within(got, want int64, frac float64) bool {
	return float64(got) >= float64(want)*(1-frac) && float64(got) <= float64(want)*(1+frac)
}

func TestBucketHoldsTenMBsOverAMinuteAndEachSecond(t *testing.T) {
	for _, tc := range []struct {
		name   string
		takers int
		piece  int64
	}{
		{"one reader, pieces", 1, Piece},
		{"eight readers, pieces", 8, Piece},
		{"sixteen writers, whole 1 MiB objects", 16, 1 << 20},
		{"three readers, odd pieces", 3, 7777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(t0)
			b := NewBucket(10_000_000, clock)
			ctx, cancel := context.WithCancel(context.Background())
			wait := run(ctx, clock, b, tc.takers, tc.piece)
			drive(t, clock, tc.takers, time.Minute)
			cancel()
			got := wait()
			if total := bytesIn(got, t0, t0.Add(time.Minute)); !within(total, 600_000_000, 0.05) {
				t.Fatalf("%d bytes in a minute at 10 MB/s; want 600 MB within 5%%", total)
			}
			// Every second of the minute, not just the whole: the cap holds on the
			// scale people watch a link at. A whole object goes at once, so a second may
			// hold one object more or less.
			slack := 0.05 + float64(tc.piece)/10_000_000
			for s := range 60 {
				from := t0.Add(time.Duration(s) * time.Second)
				if n := bytesIn(got, from, from.Add(time.Second)); !within(n, 10_000_000, slack) {
					t.Errorf("second %d: %d bytes; want 10 MB within %.0f%%", s, n, slack*100)
				}
			}
		})
	}
}

func TestBucketChangedCapAppliesAtOnce(t *testing.T) {
	t.Run("to waiters", func(t *testing.T) {
		clock := newFakeClock(t0)
		b := NewBucket(1_000_000, clock)
		done := make(chan error, 1)
		go func() { done <- b.Take(context.Background(), 2_000_000) }() // ~1.9 s at 1 MB/s
		clock.waitPending(t, 1)
		clock.Advance(500 * time.Millisecond)
		select {
		case <-done:
			t.Fatal("went before its bytes were earned")
		default:
		}
		// At 10 MB/s the rest (1.5 MB: 2 MB less 0.5 s at 1 MB/s) takes 150 ms, not 1.5 s.
		before := clock.armed(t)
		b.SetRate(10_000_000)
		waitRearmed(t, clock, before)
		clock.Advance(160 * time.Millisecond)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a raised cap did not release the waiter within 160 ms of fake time")
		}
	})
	t.Run("lowered and raised under load", func(t *testing.T) {
		clock := newFakeClock(t0)
		b := NewBucket(10_000_000, clock)
		ctx, cancel := context.WithCancel(context.Background())
		wait := run(ctx, clock, b, 4, Piece)
		drive(t, clock, 4, 10*time.Second)
		b.SetRate(2_000_000)
		drive(t, clock, 4, 10*time.Second)
		b.SetRate(0) // off: nobody waits
		clock.waitPending(t, 0)
		b.SetRate(20_000_000)
		drive(t, clock, 4, 10*time.Second)
		cancel()
		got := wait()
		if n := bytesIn(got, t0, t0.Add(10*time.Second)); !within(n, 100_000_000, 0.05) {
			t.Errorf("first 10 s at 10 MB/s: %d bytes", n)
		}
		// The first second after the change already keeps the new cap.
		if n := bytesIn(got, t0.Add(10*time.Second), t0.Add(11*time.Second)); !within(n, 2_000_000, 0.05) {
			t.Errorf("the second after lowering to 2 MB/s: %d bytes", n)
		}
		if n := bytesIn(got, t0.Add(10*time.Second), t0.Add(20*time.Second)); !within(n, 20_000_000, 0.05) {
			t.Errorf("10 s at 2 MB/s: %d bytes", n)
		}
		if n := bytesIn(got, t0.Add(21*time.Second), t0.Add(30*time.Second)); !within(n, 180_000_000, 0.05) {
			t.Errorf("9 s at 20 MB/s: %d bytes", n)
		}
	})
}

func TestBucketOffLetsEverythingGo(t *testing.T) {
	clock := newFakeClock(t0)
	b := NewBucket(0, clock)
	for range 1000 {
		if err := b.Take(context.Background(), 1<<30); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBucketCanceledTakerGivesWay(t *testing.T) {
	clock := newFakeClock(t0)
	b := NewBucket(1_000_000, clock) // empty
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- b.Take(ctx, 10_000_000) }() // 10 s
	clock.waitPending(t, 1)
	second := make(chan error, 1)
	go func() { second <- b.Take(context.Background(), 100_000) }() // behind it: 10.1 s
	clock.waitPending(t, 2)
	clock.mu.Lock()
	before := clock.pending[1] // the second's, set after the first's
	clock.mu.Unlock()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Take returned %v", err)
	}
	waitRearmed(t, clock, before) // the second looks again
	clock.Advance(110 * time.Millisecond)
	select {
	case err := <-second:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the taker behind a canceled one still waits for its bytes")
	}
}

func TestFollowWindowsAcrossMidnight(t *testing.T) {
	v := settings.Defaults()
	v.Timezone = "Europe/Berlin"
	v, err := v.With(settings.KeyWANRate, "20MB/s")
	if err != nil {
		t.Fatal(err)
	}
	if v, err = v.With(settings.KeyWANRateWindows, "08:00-16:00=5MB/s,22:00-06:00=50MB/s"); err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	clock := newFakeClock(time.Date(2026, 12, 3, 21, 59, 0, 0, berlin))
	b := NewBucket(0, clock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Follow(ctx, v.WANRateAt, time.Second, clock)
	clock.waitPending(t, 1)
	for _, step := range []struct {
		to   string // Berlin time, the next day if before the start
		want int64
	}{
		{"21:59:59", 20_000_000},
		{"22:00:00", 50_000_000},
		{"22:00:01", 50_000_000},
		{"23:59:59", 50_000_000},
		{"00:00:00", 50_000_000},
		{"05:59:59", 50_000_000},
		{"06:00:00", 20_000_000},
		{"08:00:00", 5_000_000},
		{"16:00:00", 20_000_000},
	} {
		at, _ := time.ParseInLocation("15:04:05", step.to, berlin)
		now := clock.Now().In(berlin)
		target := time.Date(now.Year(), now.Month(), now.Day(), at.Hour(), at.Minute(), at.Second(), 0, berlin)
		if target.Before(now) {
			target = target.AddDate(0, 0, 1)
		}
		for clock.Now().Before(target) {
			clock.waitPending(t, 1)
			clock.Advance(min(time.Minute, target.Sub(clock.Now())))
		}
		clock.waitPending(t, 1) // Follow looked at the new time
		if got := b.Rate(); got != step.want {
			t.Errorf("at %s Berlin: cap %d; want %d", step.to, got, step.want)
		}
	}
}

func TestReaderPacesAndGivesBackShortReads(t *testing.T) {
	clock := newFakeClock(t0)
	b := NewBucket(1_000_000, clock)
	// A reader that returns 1000 bytes a read: most of each 32 KiB taken goes back.
	src := io.LimitReader(&oneKReader{}, 3_000_000)
	r := NewReader(context.Background(), src, b)
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, r)
		done <- n
	}()
	for {
		select {
		case n := <-done:
			if n != 3_000_000 {
				t.Fatalf("read %d bytes", n)
			}
			// 3 MB at 1 MB/s: 3 s, not 3000 reads of 32 KiB.
			if el := clock.Now().Sub(t0); el < 2900*time.Millisecond || el > 3100*time.Millisecond {
				t.Fatalf("3 MB at 1 MB/s took %s of fake time", el)
			}
			return
		default:
		}
		if clock.next().IsZero() {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		clock.Advance(clock.next().Sub(clock.Now()))
	}
}

type oneKReader struct{}

func (oneKReader) Read(p []byte) (int, error) { return copy(p, make([]byte, 1000)), nil }

func TestAllTakesFromEveryLimiterAndGivesBackOnCancel(t *testing.T) {
	clock := newFakeClock(t0)
	region := NewBucket(10_000_000, clock)
	own := NewBucket(1_000_000, clock)
	l := All(own, nil, region, (*Bucket)(nil))
	if _, ok := l.(chain); !ok || len(l.(chain)) != 2 {
		t.Fatalf("All left %#v", l)
	}
	if All() != nil || All(nil, (*Bucket)(nil)) != nil {
		t.Fatal("All of nothing is not nil")
	}
	// The slower cap wins.
	ctx, cancel := context.WithCancel(context.Background())
	wait := run(ctx, clock, l, 2, Piece)
	drive(t, clock, 2, 10*time.Second)
	cancel()
	if n := bytesIn(wait(), t0, t0.Add(10*time.Second)); !within(n, 10_000_000, 0.05) {
		t.Fatalf("own 1 MB/s under region 10 MB/s: %d bytes in 10 s", n)
	}
}

func TestObjectsTakeBeforeAndSettle(t *testing.T) {
	clock := newFakeClock(t0)
	b := NewBucket(1_000_000, clock)
	o := &Objects{Limit: b}
	// Three of known size, one whose size is guessed short (and settled after), one that fails.
	objects := [][]byte{make([]byte, 500_000), make([]byte, 100_000), make([]byte, 900_000), make([]byte, 600_000), nil}
	sizes := []int64{500_000, 100_000, 900_000, -1, 0}
	done := make(chan error, 1)
	go func() {
		for i, want := range objects {
			got, err := o.Get(context.Background(), sizes[i], func() ([]byte, error) {
				if want == nil {
					return nil, errors.New("gone")
				}
				return want, nil
			})
			if (err != nil) != (want == nil) || !bytes.Equal(got, want) {
				done <- errors.New("object " + string(rune('0'+i)) + " came back wrong")
				return
			}
		}
		done <- o.Put(context.Background(), 500_000, func() error { return nil })
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			// 2.6 MB moved at 1 MB/s.
			if el := clock.Now().Sub(t0); el < 2500*time.Millisecond || el > 2700*time.Millisecond {
				t.Fatalf("2.6 MB of objects at 1 MB/s took %s of fake time", el)
			}
			return
		default:
		}
		if clock.next().IsZero() {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		clock.Advance(clock.next().Sub(clock.Now()))
	}
}

var _ Limiter = (*Bucket)(nil)

func TestBurst(t *testing.T) {
	for rate, want := range map[int64]int64{10_000: 4 << 10, 1_000_000: 50_000, 10_000_000: 500_000} {
		if got := Burst(rate); got != want {
			t.Errorf("Burst(%d) = %d; want %d", rate, got, want)
		}
	}
}
