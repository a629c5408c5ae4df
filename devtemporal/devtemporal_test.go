package devtemporal

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"tms/internal/pgtest"
	"tms/workflows"
)

type echoIn struct{ Text string }
type echoOut struct{ Text string }

func echoWorkflow(ctx workflow.Context, in echoIn) (echoOut, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out echoOut
	err := workflow.ExecuteActivity(ctx, upper, in).Get(ctx, &out)
	return out, err
}

func upper(_ context.Context, in echoIn) (echoOut, error) {
	return echoOut{Text: strings.ToUpper(in.Text)}, nil
}

func waitWorkflow(ctx workflow.Context) error {
	workflow.GetSignalChannel(ctx, "go").Receive(ctx, nil)
	return nil
}

func dial(t *testing.T, s *Server) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: s.Address()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestRunsWorkflowsAndActivities(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	c := dial(t, s)
	w := worker.New(c, "test", worker.Options{})
	w.RegisterWorkflow(echoWorkflow)
	w.RegisterActivity(upper)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "echo/1", TaskQueue: "test"}, echoWorkflow, echoIn{Text: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	var out echoOut
	if err := run.Get(ctx, &out); err != nil || out.Text != "LAB" {
		t.Fatalf("workflow result %+v, %v", out, err)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	s, err := Start(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	if _, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "wait/1", TaskQueue: "test"}, waitWorkflow); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Stop()

	s, err = Start(Options{DataDir: dir})
	if err != nil {
		t.Fatalf("restart on the same data directory: %v", err)
	}
	defer s.Stop()
	finishWaiting(ctx, t, s, "wait/1")
}

// finishWaiting has waitWorkflow id, started before a restart of the server, run to its end.
func finishWaiting(ctx context.Context, t *testing.T, s *Server, id string) {
	t.Helper()
	c := dial(t, s)
	w := worker.New(c, "test", worker.Options{})
	w.RegisterWorkflow(waitWorkflow)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := c.SignalWorkflow(ctx, id, "", "go", nil); err != nil {
		t.Fatalf("the workflow started before the restart is gone: %v", err)
	}
	if err := c.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		t.Fatalf("workflow after restart: %v", err)
	}
}

func TestBusyPortIsReported(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Start(Options{Port: l.Addr().(*net.TCPAddr).Port})
	if err == nil || !strings.Contains(err.Error(), "another Temporal or tms dev") {
		t.Fatalf("start on a busy port: %v", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("cause lost: %v", err)
	}
}

// TestOnPostgres runs the server on a real PostgreSQL (Debian's package, started by pgtest):
// the databases and schema made by CreateDatabases, the namespace and tms's search attributes
// registered, a workflow run, and its state found again after a restart.
func TestOnPostgres(t *testing.T) {
	pg := pgtest.Shared(t)
	p := &Postgres{Addr: net.JoinHostPort(pg.Addr, strconv.Itoa(pg.Port)), User: "postgres",
		Database: "temporal_devtemporal", VisibilityDatabase: "temporal_visibility_devtemporal", Shards: 2, MaxConns: 4}
	if err := p.CreateDatabases(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(Options{Postgres: p})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	attrs := workflows.TaskTags{Region: "region-a", Kind: workflows.TaskDeploy}.StartAttributes()
	if _, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "wait/pg", TaskQueue: "test", TypedSearchAttributes: attrs}, waitWorkflow); err != nil {
		t.Fatalf("a workflow with tms's search attributes: %v", err)
	}
	c.Close()
	s.Stop()

	// A second CreateDatabases keeps what the databases hold; the server starts on them.
	if err := p.CreateDatabases(); err != nil {
		t.Fatalf("CreateDatabases on existing databases: %v", err)
	}
	s, err = Start(Options{Postgres: p})
	if err != nil {
		t.Fatalf("restart on the same databases: %v", err)
	}
	defer s.Stop()
	finishWaiting(ctx, t, s, "wait/pg")
}
