package server_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/server"
	"tms/signing"
	"tms/workflows"
)

// TestRegionOnPostgresSurvivesItsRestart runs a region whose inventory is in PostgreSQL and
// stops PostgreSQL under it: an admin change made while it is down fails through Temporal
// saying PostgreSQL is unreachable; one whose activity is retried while PostgreSQL comes back
// succeeds; afterwards every terminal enrolled before is there.
func TestRegionOnPostgresSurvivesItsRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := temporalClient(t)
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t)
	r, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-pg", DataDir: t.TempDir(), Database: pg.NewDatabase(t),
		CentralKey: key.Public(), Client: c, NoRegister: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	start := func(in activities.AdminInput) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue("lab-pg")}, workflows.RegionAdmin, in)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	admin := func(in activities.AdminInput) (activities.AdminResult, error) {
		var res activities.AdminResult
		err := start(in).Get(ctx, &res)
		return res, err
	}
	enroll := func(mac, name string) activities.AdminInput {
		return activities.AdminInput{Op: activities.OpEnroll, MAC: mac, Name: name}
	}

	if _, err := admin(enroll("52:54:00:00:00:01", "pc1")); err != nil {
		t.Fatal(err)
	}
	pg.Stop(t)
	if _, err := admin(enroll("52:54:00:00:00:02", "pc2")); err == nil || !strings.Contains(err.Error(), "PostgreSQL at 127.0.0.1") || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("enroll while PostgreSQL is down: %v; want it to say PostgreSQL is unreachable", err)
	}
	// The activity's first tries fail; PostgreSQL is back before its retries run out.
	run := start(enroll("52:54:00:00:00:02", "pc2"))
	time.Sleep(300 * time.Millisecond)
	pg.Restart(t)
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("enroll retried while PostgreSQL came back: %v", err)
	}
	res, err := admin(activities.AdminInput{Op: activities.OpTerminals})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, term := range res.Terminals {
		names = append(names, term.Name)
	}
	if slices.Sort(names); !slices.Equal(names, []string{"pc1", "pc2"}) {
		t.Errorf("terminals after the restart: %v, want pc1 and pc2", names)
	}
}
