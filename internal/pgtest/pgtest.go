// Package pgtest runs a real PostgreSQL server on 127.0.0.1 for tests.
//
// The tests of one package share one cluster, started on first use; each test gets a database
// of its own, dropped when the test ends. TestMain stops the cluster after the tests:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		pgtest.StopShared()
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		dsn := pgtest.DSN(t) // postgres://postgres@127.0.0.1:PORT/t_3?sslmode=disable
//		…
//	}
//
// StateFor(t) is what tests that open tms state (central's catalog, a region's inventory) pass
// as the database: "" (a SQLite file in the server's data directory, as tms does by default)
// unless TMS_TEST_DATABASE=postgres, then a fresh PostgreSQL database. That is how the wider
// suite runs against PostgreSQL.
//
// The server comes from Debian's postgresql package (initdb and postgres in
// /usr/lib/postgresql/*/bin, or $TMS_PG_BIN). PostgreSQL refuses to run as root: a root test
// binary runs it as the postgres (or nobody) user. It listens on 127.0.0.1 only, on a free port,
// trusts every loopback connection, and runs with fsync off. A test that cannot find the
// binaries is skipped, saying so, unless TMS_TEST_DATABASE=postgres asked for PostgreSQL: then it
// fails.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// BinEnv names the environment variable that gives the directory of initdb and postgres.
const BinEnv = "TMS_PG_BIN"

// DatabaseEnv names the environment variable that makes StateFor return PostgreSQL databases.
const DatabaseEnv = "TMS_TEST_DATABASE"

// ReadyTimeout bounds the wait for a new server to accept connections.
const ReadyTimeout = 60 * time.Second

// Install says how to get the binaries.
const Install = "install Debian's postgresql package (apt-get install postgresql; .ci/run does), or set " + BinEnv

// Cluster is a running PostgreSQL server.
type Cluster struct {
	// Addr is the address the server listens on: 127.0.0.1, or StartAt's.
	Addr string
	// Port is its TCP port.
	Port int

	bin  string
	dir  string // data directory
	cred *syscall.Credential
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  string        // server log file
	dbs  atomic.Int64
}

// shared is the package's cluster. A test-support package keeps it so that every test of one
// binary shares one server (starting one takes seconds).
var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Shared returns the binary's cluster, starting it on first use. It skips the test when the
// binaries are missing (fails if TMS_TEST_DATABASE=postgres) and fails it when the server does
// not start.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() {
		bin, err := binDir()
		if err != nil {
			shared.err = err
			return
		}
		shared.c, shared.err = start(bin)
	})
	if shared.err != nil {
		var missing missingError
		if errors.As(shared.err, &missing) && os.Getenv(DatabaseEnv) != "postgres" {
			t.Skipf("PostgreSQL: %v", shared.err)
		}
		t.Fatalf("PostgreSQL: %v", shared.err)
	}
	return shared.c
}

// StopShared stops the shared cluster, if one was started, and removes its files.
func StopShared() {
	if shared.c != nil {
		shared.c.remove()
	}
}

// Start runs a cluster of the test's own (for tests that stop and restart it) and removes it
// when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		var missing missingError
		if errors.As(err, &missing) && os.Getenv(DatabaseEnv) != "postgres" {
			t.Skipf("PostgreSQL: %v", err)
		}
		t.Fatalf("PostgreSQL: %v", err)
	}
	c, err := start(bin)
	if err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	t.Cleanup(c.remove)
	return c
}

// Binaries skips the test, saying why, when PostgreSQL's binaries are missing (and fails it
// if TMS_TEST_DATABASE=postgres asked for PostgreSQL).
func Binaries(t testing.TB) {
	t.Helper()
	if _, err := binDir(); err != nil {
		var missing missingError
		if errors.As(err, &missing) && os.Getenv(DatabaseEnv) != "postgres" {
			t.Skipf("PostgreSQL: %v", err)
		}
		t.Fatalf("PostgreSQL: %v", err)
	}
}

// StartAt runs a cluster of the test's own that listens on addr (an address of a network
// namespace the test made, for servers in other namespaces of its lab) and trusts clients of
// the subnet trusted as it trusts loopback. It is removed when the test ends.
func StartAt(t testing.TB, addr, trusted string) *Cluster {
	t.Helper()
	Binaries(t)
	bin, _ := binDir()
	c, err := startOn(bin, addr, trusted)
	if err != nil {
		t.Fatalf("PostgreSQL on %s: %v", addr, err)
	}
	t.Cleanup(c.remove)
	return c
}

// DSN returns a fresh, empty database on the shared cluster, dropped when the test ends.
func DSN(t testing.TB) string {
	t.Helper()
	return Shared(t).NewDatabase(t)
}

// StateFor returns what a test passes as a tms server's database: "" (SQLite, the default)
// unless TMS_TEST_DATABASE=postgres, then a fresh PostgreSQL database.
func StateFor(t testing.TB) string {
	t.Helper()
	switch v := os.Getenv(DatabaseEnv); v {
	case "", "sqlite":
		return ""
	case "postgres":
		return DSN(t)
	default:
		t.Fatalf("%s=%q: use postgres, sqlite or nothing", DatabaseEnv, v)
		return ""
	}
}

// StateOr returns StateFor(t), or path when that is "" (SQLite): for a test that opens state
// at a file path of its own.
func StateOr(t testing.TB, path string) string {
	t.Helper()
	if db := StateFor(t); db != "" {
		return db
	}
	return path
}

// StateFunc returns a function giving each named server (central, a region's id) its
// database as StateFor does: "" for every name, or a fresh PostgreSQL database per name, the
// same one each time a name is asked again (a server restarted on the same data). It is what
// devenv.Options.Database takes.
func StateFunc(t testing.TB) func(server string) string {
	t.Helper()
	var mu sync.Mutex
	dbs := map[string]string{}
	return func(server string) string {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if db, ok := dbs[server]; ok {
			return db
		}
		dbs[server] = StateFor(t)
		return dbs[server]
	}
}

// NewDatabase creates a database on c and returns its DSN; the database is dropped when the
// test ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), c.dbs.Add(1))
	admin, err := sql.Open("pgx", c.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("PostgreSQL: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", c.dsn("postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A test that stopped the cluster on purpose and left it stopped has nothing to drop.
		if !c.running() {
			return
		}
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("PostgreSQL: drop database %s: %v", name, err)
		}
	})
	return c.dsn(name)
}

// PID is the server's main process (its connections are its children): the district-scale
// bench reads their CPU.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// DSN returns the URL of database name on c (no password: loopback is trusted).
func (c *Cluster) DSN(name string) string { return c.dsn(name) }

func (c *Cluster) dsn(name string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", net.JoinHostPort(c.Addr, strconv.Itoa(c.Port)), name)
}

// Stop stops the server (fast shutdown: open connections are cut) and waits until it has.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop(syscall.SIGINT); err != nil {
		t.Fatalf("PostgreSQL: stop: %v", err)
	}
}

// Restart starts a stopped server again on the same port with the same data.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if err := c.run(); err != nil {
		t.Fatalf("PostgreSQL: restart: %v", err)
	}
}

func (c *Cluster) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

func (c *Cluster) stop(sig syscall.Signal) error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		return errors.New("the server did not stop within 30s: killed")
	}
}

func (c *Cluster) remove() {
	c.stop(syscall.SIGQUIT)
	os.RemoveAll(filepath.Dir(c.dir))
}

// missingError says the PostgreSQL binaries are not installed.
type missingError struct{ msg string }

func (e missingError) Error() string { return e.msg }

// binDir finds the directory holding initdb and postgres: $TMS_PG_BIN, else the newest
// /usr/lib/postgresql/*/bin.
func binDir() (string, error) {
	if d := os.Getenv(BinEnv); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinEnv, d, err)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", missingError{"initdb and postgres not found in /usr/lib/postgresql/*/bin: " + Install}
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// credential is who runs the server: this process's user, unless that is root (PostgreSQL
// refuses to run as root), then postgres or, failing that, nobody.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root, and there is no postgres or nobody user to run PostgreSQL as")
}

func start(bin string) (*Cluster, error) { return startOn(bin, "127.0.0.1", "") }

func startOn(bin, addr, trusted string) (*Cluster, error) {
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	removeStale()
	root, err := os.MkdirTemp("", "tms-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Addr: addr, bin: bin, dir: filepath.Join(root, "data"), cred: cred, log: filepath.Join(root, "server.log")}
	if cred != nil {
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(root)
			return nil, err
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", c.dir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.Dir = root
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("initdb: %w: %s", err, tail(string(out)))
	}
	// Loopback only, trusted (initdb -A trust writes that for local, host 127.0.0.1/32 and ::1),
	// and the lab's subnet for StartAt.
	if trusted != "" {
		hba, err := os.OpenFile(filepath.Join(c.dir, "pg_hba.conf"), os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			_, err = fmt.Fprintf(hba, "host all all %s trust\n", trusted)
			if cerr := hba.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			os.RemoveAll(root)
			return nil, err
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	c.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := c.run(); err != nil {
		c.remove()
		return nil, err
	}
	return c, nil
}

// run starts the server on c.Port and waits until it accepts connections.
func (c *Cluster) run() error {
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), "-D", c.dir,
		"-c", "listen_addresses="+c.Addr, "-c", "port="+strconv.Itoa(c.Port),
		"-c", "unix_socket_directories="+c.dir, "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=16MB")
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The kernel stops the server (SIGQUIT: immediate shutdown, its children follow) when the
	// test binary dies, so a binary killed by a timeout leaves no server running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGQUIT}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()

	db, err := sql.Open("pgx", c.dsn("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(ReadyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("postgres exited at start: %s", c.logTail())
		default:
		}
		if time.Now().After(deadline) {
			c.stop(syscall.SIGQUIT)
			return fmt.Errorf("postgres not ready within %s: %v: %s", ReadyTimeout, err, c.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeStale removes the clusters test binaries killed before they could (SIGKILL, a
// timeout): directories over an hour old whose server is not running.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "tms-pgtest-*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			line, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && syscall.Kill(pid, 0) == nil {
				continue // running
			}
		}
		os.RemoveAll(d)
	}
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.log)
	return tail(string(b))
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}
