package classroom

import (
	"testing"
	"time"

	"tms/internal/netlab"
)

func TestPercentile(t *testing.T) {
	s := func(secs ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range secs {
			ds = append(ds, time.Duration(x)*time.Second)
		}
		return ds
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"none", nil, 50, 0},
		{"one", s(7), 50, 7 * time.Second},
		{"one at p99", s(7), 99, 7 * time.Second},
		{"median of five is the third", s(1, 2, 3, 4, 5), 50, 3 * time.Second},
		{"p99 of five is the last", s(1, 2, 3, 4, 5), 99, 5 * time.Second},
		{"median of ten is the fifth", s(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 50, 5 * time.Second},
		{"p99 of thirty is the last", s(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30), 99, 30 * time.Second},
		{"p0 is the first", s(1, 2, 3), 0, time.Second},
	} {
		if got := Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: Percentile(%v, %v) = %v, want %v", tc.name, tc.sorted, tc.p, got, tc.want)
		}
	}
}

// TestHost checks that terminal lab-pcN runs in host N, and that no other name gets a host.
func TestHost(t *testing.T) {
	c := &Classroom{Lab: netlab.Attach("tmslab-1", 4)}
	for _, tc := range []struct {
		name string
		host int
		ok   bool
	}{
		{"lab-pc1", 1, true},
		{"lab-pc3", 3, true},
		{"lab-pc4", 0, false}, // host 4 does not exist: hosts 0…3
		{"lab-pc0", 0, false}, // host 0 is the region's
		{"lab-pc01", 0, false},
		{"lab-pc1x", 0, false},
		{"a-pc1", 0, false},
		{"lab-pc-1", 0, false},
	} {
		h, err := c.host(tc.name)
		if (err == nil) != tc.ok || h != tc.host {
			t.Errorf("host(%q) = %d, %v; want %d, ok %v", tc.name, h, err, tc.host, tc.ok)
		}
	}
}
