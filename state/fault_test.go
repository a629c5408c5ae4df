package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"tms/internal/logbuf"
	"tms/internal/pgtest"
)

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Opening a PostgreSQL nobody answers retries, logging each failure with the host (never the
// password), then fails naming the host and the cause.
func TestOpenUnreachablePostgresRetriesThenFails(t *testing.T) {
	var logs logbuf.Buffer
	port := freePort(t)
	dsn := fmt.Sprintf("postgres://tms:s3cret-pw@127.0.0.1:%d/tms?sslmode=disable", port)
	start := time.Now()
	_, err := OpenInventory(context.Background(), dsn,
		WithConnectTimeout(1500*time.Millisecond), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	took := time.Since(start)
	host := fmt.Sprintf("127.0.0.1:%d/tms", port)
	var ue *UnreachableError
	if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("open: %v; want an UnreachableError naming %s and the refusal", err, host)
	}
	if took < 1500*time.Millisecond || took > 15*time.Second {
		t.Errorf("open gave up after %s; the bound was 1.5s", took)
	}
	if n := strings.Count(logs.String(), "PostgreSQL unreachable; retrying"); n < 3 || !strings.Contains(logs.String(), host) {
		t.Errorf("%d retries logged (want several, each naming %s):\n%s", n, host, logs.String())
	}
	if strings.Contains(logs.String()+err.Error(), "s3cret-pw") {
		t.Errorf("the password shows in the log or the error:\n%s\n%v", logs.String(), err)
	}
}

// A server that comes up while open retries is used.
func TestOpenWaitsForPostgresToComeUp(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewDatabase(t)
	c.Stop(t)
	go func() {
		time.Sleep(time.Second)
		c.Restart(t)
	}()
	inv, err := OpenInventory(context.Background(), dsn, WithConnectTimeout(60*time.Second))
	if err != nil {
		t.Fatalf("open while the server starts: %v", err)
	}
	inv.Close()
}

// PostgreSQL stopped between two calls: the call while it is down says it is unreachable;
// once it is back the next call works and the rows written before are there.
func TestPostgresStoppedMidRun(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t)
	inv, err := OpenInventory(ctx, c.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	if err := inv.Enroll(ctx, "52:54:00:00:00:01", "pc1"); err != nil {
		t.Fatal(err)
	}
	c.Stop(t)
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"enroll", func() error { return inv.Enroll(ctx, "52:54:00:00:00:02", "pc2") }},
		{"read", func() error { _, err := inv.Terminal(ctx, "pc1"); return err }},
		{"transaction", func() error { return inv.Seen(ctx, "52:54:00:00:00:03", "10.0.0.3", time.Now()) }},
	} {
		err := call.do()
		var ue *UnreachableError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("%s while PostgreSQL is down: %v; want an UnreachableError", call.name, err)
		}
	}
	c.Restart(t)
	if err := inv.Enroll(ctx, "52:54:00:00:00:02", "pc2"); err != nil {
		t.Fatalf("enroll after PostgreSQL came back: %v", err)
	}
	for _, name := range []string{"pc1", "pc2"} {
		if _, err := inv.Terminal(ctx, name); err != nil {
			t.Errorf("%s after the restart: %v", name, err)
		}
	}
}

func TestRedactDSN(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://tms:s3cret@db.lab:5432/tms?sslmode=require", "postgres://tms:xxxxx@db.lab:5432/tms?sslmode=require"},
		{"postgresql://tms@db.lab/tms?password=s3cret&sslmode=disable", "postgresql://tms@db.lab/tms?password=xxxxx&sslmode=disable"},
		{"postgres://db.lab/tms", "postgres://db.lab/tms"},
		{"/var/lib/tms/inventory.db", "/var/lib/tms/inventory.db"},
	} {
		if got := RedactDSN(c.in); got != c.want || strings.Contains(got, "s3cret") {
			t.Errorf("RedactDSN(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// A server that answers and refuses (here: no such database) is not waited for: retrying
// changes nothing, and the admin should hear at once.
func TestOpenRefusedPostgresFailsAtOnce(t *testing.T) {
	c := pgtest.Shared(t)
	start := time.Now()
	_, err := OpenInventory(context.Background(), c.DSN("no_such_database"), WithConnectTimeout(time.Minute))
	var ue *UnreachableError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "no_such_database") {
		t.Fatalf("open: %v; want a refusal naming the database, not unreachable", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a refusal took %s: it was retried", took)
	}
}

// A cancelled call's error is the context's, not "unreachable".
func TestCancelledCallIsNotUnreachable(t *testing.T) {
	forEachBackend(t, testCancelledCallIsNotUnreachable)
}

func testCancelledCallIsNotUnreachable(t *testing.T) {
	inv, err := OpenInventory(context.Background(), testDB(t, "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = inv.Enroll(ctx, "52:54:00:00:00:01", "pc1")
	var ue *UnreachableError
	if !errors.Is(err, context.Canceled) || errors.As(err, &ue) {
		t.Errorf("a cancelled enroll: %v; want context.Canceled as it is", err)
	}
}
