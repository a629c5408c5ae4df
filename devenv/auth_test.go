package devenv_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/auth"
	"tms/devenv"
	"tms/internal/pgtest"
	"tms/workers"
	"tms/workflows"
)

// With Auth, the Temporal UI's port serves a login page; after it, the browser's requests reach
// the UI's API with the user's token, and without it they are refused.
func TestAuthLoginPageAndLookup(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uiPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: filepath.Join(dir, "dev"), TemporalPort: -1, UIPort: uiPort,
		RegionPortBase: -1, CentralPort: -1, Regions: []string{"region-a"}, Terminals: -1, Auth: true, Database: pgtest.StateFunc(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	base := "http://" + env.UIAddress()
	api := base + "/api/v1/namespaces/default/workflows"

	resp, err := http.Get(api)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("the UI's API without a login: %d %s", resp.StatusCode, b)
	}

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	resp, err = hc.PostForm(base+"/tms-login", url.Values{"user": {"admin"}, "password": {env.AdminPassword}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login through the UI's page: %d", resp.StatusCode)
	}
	resp, err = hc.Get(api)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "executions") {
		t.Fatalf("the UI's API after the login: %d %s", resp.StatusCode, b)
	}

	// An operator cancels a task of a granted region only: the authorizer looks the task's
	// region up through the frontend with a client of its own.
	ctx := context.Background()
	tok, err := env.Token("alice", auth.RoleOperator, "region-a")
	if err != nil {
		t.Fatal(err)
	}
	o := client.Options{HostPort: env.TemporalAddress()}
	workers.Bearer(&o, func(context.Context) (string, error) { return tok, nil })
	alice, err := client.Dial(o)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	start := func(c client.Client, region, by string) string {
		t.Helper()
		id := "power-on/" + region + "/nobody/" + by
		tags := workflows.TaskTags{Region: region, Kind: workflows.TaskPowerOn, StartedBy: by}
		// A workflow type no worker knows: it waits, which is all this needs.
		if _, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: activities.RegionQueue(region),
			TypedSearchAttributes: tags.StartAttributes()}, "NoSuchWorkflow"); err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		return id
	}
	mine := start(alice, "region-a", "alice")
	theirs := start(env.Client, "region-b", "admin")
	if err := alice.CancelWorkflow(ctx, mine, ""); err != nil {
		t.Fatalf("alice cancels her region's task: %v", err)
	}
	err = alice.CancelWorkflow(ctx, theirs, "")
	var pd *serviceerror.PermissionDenied
	if !errors.As(err, &pd) || !strings.Contains(pd.Reason, "operator alice may act in region-a only, not region-b") {
		t.Fatalf("alice cancels a task of region-b: %v", err)
	}
}
