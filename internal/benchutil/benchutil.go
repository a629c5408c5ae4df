// Package benchutil holds what tms's benchmarks share: where they write, how large a disk they
// use, and timing the baseline commands (cp, sync) they are measured against.
package benchutil

import (
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"syscall"
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

// Profile starts a CPU profile of the part of a benchmark that follows, written to
// $TMS_BENCH_CPUPROFILE if it is set (a profile of the test binary also covers the setup:
// writing the sample disk, capturing it). The returned function stops it; it does nothing
// when the variable is unset.
func Profile(b *testing.B) (stop func()) {
	b.Helper()
	path := os.Getenv("TMS_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("TMS_BENCH_CPUPROFILE: %v (is -cpuprofile set too?)", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// Log is the log of what a benchmark runs: $TMS_BENCH_LOG's file, at Info, if it is set (the
// agent logs where a deploy's time went), else nothing.
func Log(b *testing.B) *slog.Logger {
	b.Helper()
	path := os.Getenv("TMS_BENCH_LOG")
	if path == "" {
		return slog.New(slog.DiscardHandler)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return slog.New(slog.NewTextHandler(f, nil))
}

// CPUTime is the CPU time (user and system) the benchmark's process has used so far: in a
// benchmark that runs every part in one process, the difference over a step is what the step
// cost, which other work on a shared machine changes much less than its wall time.
func CPUTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
