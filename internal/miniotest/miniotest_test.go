package miniotest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"tms/store/s3store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

func TestStartServesS3(t *testing.T) {
	srv := Start(t)
	if host, _, err := net.SplitHostPort(srv.Endpoint); err != nil || host != "127.0.0.1" {
		t.Fatalf("Endpoint = %q, want 127.0.0.1:PORT", srv.Endpoint)
	}
	srv.MakeBucket(t, "images")
	ctx := context.Background()
	c := srv.Client(t)
	want := []byte("hello")
	if _, err := c.PutObject(ctx, "images", "a/b", bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	o, err := c.GetObject(ctx, "images", "a/b", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %q, %v; want %q", got, err, want)
	}
}

func TestStopKillsServer(t *testing.T) {
	dir := t.TempDir()
	s, err := start(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.stop()
	if _, err := net.DialTimeout("tcp", s.Endpoint, time.Second); err == nil {
		t.Fatalf("%s still accepts connections after stop", s.Endpoint)
	}
}

func TestSharedIsShared(t *testing.T) {
	a := Shared(t)
	b := Shared(t)
	if a != b {
		t.Fatal("Shared started two servers")
	}
	b1, b2 := a.NewBucket(t), a.NewBucket(t)
	if b1 == b2 {
		t.Fatalf("NewBucket gave %q twice", b1)
	}
}

func TestNewBucketNamesAreValid(t *testing.T) {
	for _, name := range []string{
		"TestX",
		"TestStore/corrupt_chunk",
		"Test" + strings.Repeat("Long_Name", 20),
		"___",
		"Test--x--y",
	} {
		for _, n := range []int64{1, 12345} {
			b := bucketName(name, n)
			if err := s3store.ValidateBucket(b); err != nil {
				t.Errorf("bucketName(%q, %d) = %q: %v", name, n, b, err)
			}
		}
	}
}

// fakeT records a Fatalf or a Skip and ends the goroutine, as testing.T does.
type fakeT struct {
	testing.TB
	fatal   string
	skipped bool
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeT) Fatal(args ...any)                { f.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (f *fakeT) FailNow()                         { f.fatal = "FailNow"; runtime.Goexit() }
func (f *fakeT) Skip(args ...any)                 { f.skipped = true; runtime.Goexit() }
func (f *fakeT) Skipf(format string, args ...any) { f.skipped = true; runtime.Goexit() }
func (f *fakeT) SkipNow()                         { f.skipped = true; runtime.Goexit() }

// startWith runs Start as a test whose MinIO binary is bin, and returns how it ended.
func startWith(t *testing.T, bin string) *fakeT {
	t.Setenv(BinEnv, bin)
	f := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(f)
	}()
	<-done
	if f.skipped {
		t.Fatal("Start skipped the test; it must fail it")
	}
	return f
}

func TestStartFailsWithoutBinary(t *testing.T) {
	f := startWith(t, filepath.Join(t.TempDir(), "no-minio-here"))
	if f.fatal == "" {
		t.Fatal("Start did not fail the test")
	}
	for _, want := range []string{BinEnv, "go install " + Module, ".ci/run"} {
		if !strings.Contains(f.fatal, want) {
			t.Errorf("failure %q does not mention %q", f.fatal, want)
		}
	}
}

func TestStartFailureShowsServerOutput(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "minio")
	script := "#!/bin/sh\necho 'FATAL cannot start: drive is on fire' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f := startWith(t, bin)
	if f.fatal == "" {
		t.Fatal("Start did not fail the test")
	}
	if !strings.Contains(f.fatal, "drive is on fire") {
		t.Errorf("failure %q does not show the server's output", f.fatal)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start took %v to notice the server exited", d)
	}
}

// TestServerDiesWithTestBinary runs a test binary that starts the shared server and exits
// without StopShared, as one killed by a timeout would, and checks that the server went too.
func TestServerDiesWithTestBinary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the server outlives its test binary only where there is no Pdeathsig")
	}
	if os.Getenv("MINIOTEST_ORPHAN") == "1" {
		s := Shared(t)
		fmt.Printf("pid=%d dir=%s\n", s.cmd.Process.Pid, shared.dir)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithTestBinary$")
	cmd.Env = append(os.Environ(), "MINIOTEST_ORPHAN=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(string(out), "pid=%d dir=%s", &pid, &dir); err != nil || !strings.Contains(dir, "miniotest-") {
		t.Fatalf("helper said %q", out)
	}
	defer os.RemoveAll(dir)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
			break // a zombie: dead, waiting for init to reap it
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("MinIO (pid %d) still runs after its test binary exited", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
