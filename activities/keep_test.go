package activities_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/state"
	"tms/store"
)

func appErrType(err error) string {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) {
		return ae.Type()
	}
	return ""
}

// What PrepareTask and FinishTask do for a deploy: hold the version for the task, release it
// at the end.
func TestDeployHoldKeepsItsVersion(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	v := storetest.Publish(t, s, "lab", "v1", "a", "b")
	r := &activities.Region{ID: "region-b", Store: s}
	task := "deploy/region-b/lab/classroom/pc-07"
	if err := r.HoldVersion(ctx, activities.HoldInput{Version: v.ID.String(), Holder: task, Until: time.Now().Add(12 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ref, _ := manifest.ParseRef("lab:v1")
	var he *store.HeldError
	if _, err := s.Remove(ctx, ref); !errors.As(err, &he) || !strings.Contains(err.Error(), task) {
		t.Fatalf("Remove during the deploy = %v; want a *HeldError naming %s", err, task)
	}
	if err := r.ReleaseHolds(ctx, activities.ReleaseInput{Holder: task}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove(ctx, ref); err != nil {
		t.Fatalf("Remove after the deploy: %v", err)
	}
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"removed version", r.HoldVersion(ctx, activities.HoldInput{Version: v.ID.String(), Holder: task, Until: time.Now().Add(time.Hour)}), "NotHere"},
		{"bad holder", r.HoldVersion(ctx, activities.HoldInput{Version: storetest.Publish(t, s, "lab", "", "c").ID.String(), Until: time.Now().Add(time.Hour)}), "BadInput"},
		{"past expiry", r.HoldVersion(ctx, activities.HoldInput{Version: storetest.Publish(t, s, "lab", "", "d").ID.String(), Holder: task, Until: time.Now().Add(-time.Minute)}), "BadInput"},
		{"bad version", r.HoldVersion(ctx, activities.HoldInput{Version: "xyz", Holder: task, Until: time.Now().Add(time.Hour)}), "BadVersion"},
	} {
		if got := appErrType(c.err); got != c.want {
			t.Errorf("%s: %v (type %q), want a non-retryable %q", c.name, c.err, got, c.want)
		}
	}
}

// hookBackend calls hook at the first Put.
type hookBackend struct {
	store.Backend
	once sync.Once
	hook func()
}

func (b *hookBackend) Put(ctx context.Context, key string, data []byte) error {
	b.once.Do(b.hook)
	return b.Backend.Put(ctx, key, data)
}

// The source region holds the version while it pushes it to the relay, and lets go after.
func TestPushToRelayHoldsTheSource(t *testing.T) {
	src, _ := storetest.Dir(t)
	relayDir, _ := storetest.Dir(t)
	v, _ := imported(t, src, 8*mib)
	var during []store.Hold
	relay := store.New(&hookBackend{Backend: relayDir.Backend(), hook: func() {
		during, _ = src.Holds(context.Background(), v.Version.ID)
	}}, store.Options{})
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	var r *activities.Region
	env.RegisterActivity(&activities.Region{ID: "region-a", Store: src, Relay: relay})
	if _, err := env.ExecuteActivity(r.PushToRelay, activities.RelayInput{Version: v.Version.ID.String()}); err != nil {
		t.Fatal(err)
	}
	if len(during) != 1 || time.Until(during[0].Until) > activities.RelayHoldTTL+time.Second {
		t.Fatalf("holds in the source while pushing = %+v; want one of at most %s", during, activities.RelayHoldTTL)
	}
	if after, err := src.Holds(context.Background(), v.Version.ID); err != nil || len(after) != 0 {
		t.Fatalf("holds after the push = %+v, %v", after, err)
	}
}

// Finding: tms image rm and tms store gc during a deploy left the terminal half written. The
// deploy's PrepareTask now holds its version until FinishTask, whatever the task's outcome.
func TestDeployTaskHoldsItsVersionUntilItEnds(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	v := storetest.Publish(t, s, "lab", "v1", "a", "b")
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "inventory.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	if err := inv.Enroll(ctx, "52:54:00:00:07:01", "pc-07"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSignature(ctx, v.ID, centralKey.SignVersion(v.ID)); err != nil {
		t.Fatal(err)
	}
	r := &activities.Region{ID: "region-b", Store: s, Inventory: inv, CentralKey: centralKey.Public()}
	task := "deploy/region-b/lab/lab/pc-07@run-1"
	// The version in Image, as workflows before TaskInput.Version passed it: still a deploy of it.
	ref, err := r.PrepareTask(ctx, activities.TaskInput{Task: task, TerminalRef: "pc-07", Kind: "deploy", Image: v.ID.String(), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	lab, _ := manifest.ParseRef("lab:v1")
	var he *store.HeldError
	if _, err := s.Remove(ctx, lab); !errors.As(err, &he) || !strings.Contains(err.Error(), task) {
		t.Fatalf("image rm during the deploy = %v; want it refused, naming %s", err, task)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetManifest(ctx, v.ID); err != nil {
		t.Fatalf("the deployed version after gc: %v", err)
	}
	if err := r.FinishTask(ctx, activities.FinishInput{Task: task, MAC: ref.MAC, State: state.TaskFailed, Error: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove(ctx, lab); err != nil {
		t.Fatalf("image rm after the deploy ended: %v", err)
	}
}
