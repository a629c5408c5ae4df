// Package miniotest runs a real MinIO server on 127.0.0.1 for tests.
//
// A test that needs its own server calls Start; the server is killed when the test ends:
//
//	srv := miniotest.Start(t)
//	srv.MakeBucket(t, "images")
//
// Starting MinIO takes a second or two, so the tests of one package usually share one server,
// each in buckets of its own. Shared starts it on first use; TestMain stops it after the tests:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		miniotest.StopShared()
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		srv := miniotest.Shared(t)
//		bucket := srv.NewBucket(t)
//		…
//	}
//
// The server binary is $TMS_MINIO_BIN, else $HOME/.cache/tms/bin/minio, else minio on PATH. A
// test that cannot find or start it fails; it never skips. .ci/run installs the binary, or:
//
//	GOBIN=$HOME/.cache/tms/bin go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Module is the MinIO release the tests are run against.
const Module = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

// BinEnv names the environment variable that gives the MinIO binary.
const BinEnv = "TMS_MINIO_BIN"

// ReadyTimeout bounds the wait for a new server to become ready.
const ReadyTimeout = 30 * time.Second

// Install says how to get the binary; failures repeat it.
const Install = "run .ci/run, or install it with: GOBIN=$HOME/.cache/tms/bin go install " + Module

// Server is a running MinIO server.
type Server struct {
	// Endpoint is the S3 API's address, 127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the root credentials, made up for this server.
	AccessKey, SecretKey string

	cmd     *exec.Cmd
	out     *tail
	exited  chan struct{} // closed when the process has exited
	waitErr error         // valid after exited is closed
	buckets atomic.Int64
}

// Start runs a new server with its data in t.TempDir() and kills it when the test ends. It fails
// the test if the server cannot be found or started.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	s, err := start(dir)
	if err != nil {
		t.Fatalf("miniotest: %v", err)
	}
	t.Cleanup(func() { s.stop() })
	return s
}

var shared struct {
	once sync.Once
	srv  *Server
	dir  string
	err  error
}

// Shared returns the server shared by the tests of this test binary, starting it on first use.
// Its data lives in a temporary directory until StopShared, which TestMain calls after m.Run.
// Without that call the server is killed when the test binary exits, on Linux, and its data is
// left behind. Tests that share the server keep to buckets of their own (NewBucket).
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "miniotest-")
		if shared.err == nil {
			shared.srv, shared.err = start(shared.dir)
		}
	})
	if shared.err != nil {
		t.Fatalf("miniotest: shared server: %v", shared.err)
	}
	return shared.srv
}

// StopShared stops the shared server, if Shared started one, and removes its data.
func StopShared() {
	if shared.srv != nil {
		shared.srv.stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// Binary finds the MinIO server binary: $TMS_MINIO_BIN, else $HOME/.cache/tms/bin/minio, else
// minio on PATH.
func Binary() (string, error) {
	if p := os.Getenv(BinEnv); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("$%s=%s: %v; %s", BinEnv, p, err, Install)
		}
		return p, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "tms", "bin", "minio")
		if executable(p) == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no MinIO server binary: not in $%s, $HOME/.cache/tms/bin/minio or PATH; %s", BinEnv, Install)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%w: not an executable file", fs.ErrPermission)
	}
	return nil
}

// inUse matches what MinIO says when a port was taken between our choosing it and its binding it.
var inUse = regexp.MustCompile(`(?i)address already in use|port .* (?:is )?(?:already )?in use`)

// start runs a server with its files under dir, trying new ports if the chosen ones were taken.
func start(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		s, err := startOnce(bin, filepath.Join(dir, fmt.Sprint(attempt)))
		if err == nil {
			return s, nil
		}
		if attempt == 3 || s == nil || !inUse.MatchString(s.out.String()) {
			return nil, err
		}
	}
}

// startOnce runs one server and waits until it is ready. On failure it returns the stopped
// server, if it got as far as starting one, with the error.
func startOnce(bin, dir string) (*Server, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	api, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Endpoint:  api,
		AccessKey: "tms" + randomHex(8),
		SecretKey: randomHex(20),
		out:       &tail{max: 8 << 10},
		exited:    make(chan struct{}),
	}
	cmd := exec.Command(bin, "server", "--quiet",
		"--address", api, "--console-address", console,
		"--certs-dir", filepath.Join(dir, "certs"),
		filepath.Join(dir, "data"))
	cmd.Env = append(environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1", // smaller buffer pools: a test server need not size itself to the machine
		"HOME="+dir,     // MinIO keeps a few files under $HOME/.minio
	)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = sysProcAttr()
	started := make(chan error)
	go func() {
		// The kernel sends the death signal when the thread that started the server exits,
		// not the process. A thread ends when a goroutine locked to it returns, which other
		// tests may do; so the server is started from a thread that this goroutine holds until
		// the server has exited.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s: %v; %s", bin, err, Install)
	}
	s.cmd = cmd
	if err := s.waitReady(); err != nil {
		s.stop()
		return s, fmt.Errorf("%s server on %s: %v\n--- last output of MinIO ---\n%s", bin, api, err, s.out.String())
	}
	return s, nil
}

// environ is the test's environment without the MINIO_ variables a developer may have set.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MINIO_") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *Server) waitReady() error {
	url := "http://" + s.Endpoint + "/minio/health/ready"
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(ReadyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("exited before it was ready (%v)", s.waitErr)
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-s.exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %v: %s: %v", ReadyTimeout, url, last)
}

// stop kills the server and waits for it to exit.
func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
}

// Client returns a client logged in as root, for setting up and inspecting what a test does.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region: "us-east-1",
	})
	if err != nil {
		t.Fatalf("miniotest: client for %s: %v", s.Endpoint, err)
	}
	return c
}

// MakeBucket creates bucket name.
func (s *Server) MakeBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("miniotest: make bucket %q on %s: %v", name, s.Endpoint, err)
	}
}

// NewBucket creates a bucket named after the test, unique on this server, and returns its name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := bucketName(t.Name(), s.buckets.Add(1))
	s.MakeBucket(t, name)
	return name
}

// bucketName makes a valid bucket name from a test name and a number.
func bucketName(test string, n int64) string {
	var b strings.Builder
	dash := true // no dash at the start, none twice
	for _, r := range strings.ToLower(test) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	base := strings.TrimSuffix(b.String(), "-")
	suffix := fmt.Sprintf("-%d", n)
	if max := 63 - len(suffix); len(base) > max {
		base = strings.TrimSuffix(base[:max], "-")
	}
	if base == "" {
		base = "test"
	}
	return base + suffix
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
