// Package benchutil holds what tms's benchmarks share: where they write, how large a disk they
// use, and timing the baseline commands (cp, sync) they are measured against.
package benchutil

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Dir makes a fresh directory under $TMS_BENCH_DIR (default: the system's temporary
// directory), removed when the benchmark ends.
func Dir(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp(os.Getenv("TMS_BENCH_DIR"), "tms-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// DiskSize is the size of the benchmark's disk: $TMS_BENCH_SIZE bytes, default 2 GiB.
func DiskSize(b *testing.B) int64 {
	if s := os.Getenv("TMS_BENCH_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("TMS_BENCH_SIZE=%q: %v", s, err)
		}
		return n
	}
	return 2 << 30
}

// Run runs a command and returns how long it took.
func Run(b *testing.B, name string, args ...string) time.Duration {
	b.Helper()
	start := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return time.Since(start)
}
