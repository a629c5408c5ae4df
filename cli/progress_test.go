package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressLine(t *testing.T) {
	p := newProgressBar(nil, true, "import")
	got := p.line(512<<20, 2<<30, 2*time.Second)
	for _, want := range []string{"import [=====>", " 25.0%", "512.0 MiB / 2.0 GiB", "256.0 MiB/s", "ETA 0:06"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress line %q lacks %q", got, want)
		}
	}
}

func TestProgressOffDrawsNothing(t *testing.T) {
	var b bytes.Buffer
	p := newProgressBar(&b, false, "import")
	p.Update(1, 2)
	p.Done()
	if b.Len() != 0 {
		t.Fatalf("drew %q with progress off", b.String())
	}
	p = newProgressBar(&b, true, "export")
	p.Update(1, 2)
	p.Done()
	if !strings.Contains(b.String(), "export") || !strings.HasSuffix(b.String(), "\r\x1b[K") {
		t.Fatalf("drew %q", b.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB", 5 << 40: "5.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
