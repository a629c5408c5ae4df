package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"tms/store"
)

// progressBar draws one line of progress (bytes, percent, rate, ETA) on a terminal. On anything
// that is not a terminal it draws nothing: scripts get the one-line summary only.
type progressBar struct {
	w     io.Writer
	on    bool
	label string
	start time.Time
	mu    sync.Mutex
	last  time.Time
	drawn bool
	now   func() time.Time
}

func newProgressBar(w io.Writer, on bool, label string) *progressBar {
	return &progressBar{w: w, on: on, label: label, start: time.Now(), now: time.Now}
}

// Update is safe to call from many goroutines; it redraws at most ten times a second.
func (p *progressBar) Update(done, total int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if now.Sub(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = now
	fmt.Fprint(p.w, "\r"+p.line(done, total, now.Sub(p.start))+"\x1b[K")
	p.drawn = true
}

func (p *progressBar) line(done, total int64, elapsed time.Duration) string {
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	const width = 24
	filled := int(frac * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	if filled < width && filled > 0 {
		bar = bar[:filled-1] + ">" + bar[filled:]
	}
	rate, eta := "", "--:--"
	if secs := elapsed.Seconds(); secs > 0.2 && done > 0 {
		r := float64(done) / secs
		rate = humanBytes(int64(r)) + "/s"
		eta = clock(time.Duration(float64(total-done) / r * float64(time.Second)))
	}
	return fmt.Sprintf("%s [%s] %5.1f%% %s / %s  %s  ETA %s", p.label, bar, 100*frac, humanBytes(done), humanBytes(total), rate, eta)
}

// Done clears the bar so the summary line stands alone.
func (p *progressBar) Done() {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

func clock(d time.Duration) string {
	s := int64(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// humanBytes formats a byte count with binary units: 1.5 GiB (as the store's messages do).
func humanBytes(n int64) string { return store.FormatBytes(n) }

// rate formats bytes over a duration.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanBytes(int64(float64(n)/d.Seconds())) + "/s"
}
