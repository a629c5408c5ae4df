package temporalauth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/auth"
	"tms/auth/temporalauth"
	"tms/devtemporal"
	"tms/signing"
	"tms/workers"
	"tms/workflows"
)

// logRecords keeps what the authorizer logs.
type logRecords struct {
	mu   sync.Mutex
	recs []string
}

func (r *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecords) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	r.mu.Lock()
	r.recs = append(r.recs, b.String())
	r.mu.Unlock()
	return nil
}
func (r *logRecords) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecords) WithGroup(string) slog.Handler      { return r }
func (r *logRecords) has(parts ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, s := range r.recs {
		for _, p := range parts {
			if !strings.Contains(s, p) {
				continue next
			}
		}
		return true
	}
	return false
}

type env struct {
	srv  *devtemporal.Server
	key  *signing.PrivateKey
	logs *logRecords
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func start(t *testing.T) *env {
	t.Helper()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{key: key, logs: &logRecords{}}
	worker := &auth.WorkerTokens{Key: key, Name: "authorizer"}
	var (
		once sync.Once
		svc  workflowservice.WorkflowServiceClient
		derr error
	)
	lookup := &temporalauth.FrontendLookup{Service: func() (workflowservice.WorkflowServiceClient, error) {
		once.Do(func() {
			o := client.Options{HostPort: e.srv.Address()}
			workers.Bearer(&o, worker.Token)
			var c client.Client
			c, derr = client.Dial(o)
			if derr == nil {
				svc = c.WorkflowService()
				t.Cleanup(c.Close)
			}
		})
		return svc, derr
	}}
	a := temporalauth.New(temporalauth.Options{Key: key.Public(), Lookup: lookup, Log: slog.New(e.logs)})
	e.srv, err = devtemporal.Start(devtemporal.Options{Authorizer: a, ClaimMapper: a, UIPort: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Stop)
	return e
}

func (e *env) token(t *testing.T, c auth.Claims, life time.Duration) string {
	t.Helper()
	tok, _, err := auth.Mint(e.key, c, time.Now(), life)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *env) dial(t *testing.T, tok string) client.Client {
	t.Helper()
	o := client.Options{HostPort: e.srv.Address()}
	if tok != "" {
		workers.Bearer(&o, func(context.Context) (string, error) { return tok, nil })
	}
	c, err := client.Dial(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func taskOptions(id, region, kind, by string) client.StartWorkflowOptions {
	tags := workflows.TaskTags{Region: region, Kind: kind, StartedBy: by}
	return client.StartWorkflowOptions{ID: id, TaskQueue: activities.RegionQueue(region), TypedSearchAttributes: tags.StartAttributes()}
}

// refused checks err is a permission denial naming the rule.
func refused(t *testing.T, err error, rule string) {
	t.Helper()
	var pd *serviceerror.PermissionDenied
	if !errors.As(err, &pd) || !strings.Contains(err.Error()+" "+pd.Reason, rule) {
		t.Fatalf("err %v, want permission denied saying %q", err, rule)
	}
}

func TestAuthorizerOnARealServer(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	admin := e.dial(t, e.token(t, auth.Claims{Subject: "root", Role: auth.RoleAdmin}, time.Hour))
	alice := e.dial(t, e.token(t, auth.Claims{Subject: "alice", Role: auth.RoleOperator, Regions: []string{"region-a"}}, time.Hour))
	vic := e.dial(t, e.token(t, auth.Claims{Subject: "vic", Role: auth.RoleViewer}, time.Hour))

	// The workflows never run (no worker): starting, reading and cancelling are what is checked.
	if _, err := admin.ExecuteWorkflow(ctx, taskOptions("deploy/region-b/admin", "region-b", workflows.TaskDeploy, "root"), "Deploy"); err != nil {
		t.Fatalf("admin start: %v", err)
	}
	if _, err := alice.ExecuteWorkflow(ctx, taskOptions("deploy/region-a/alice", "region-a", workflows.TaskDeploy, "alice"), "Deploy"); err != nil {
		t.Fatalf("operator start in a granted region: %v", err)
	}
	_, err := alice.ExecuteWorkflow(ctx, taskOptions("deploy/region-b/alice", "region-b", workflows.TaskDeploy, "alice"), "Deploy")
	refused(t, err, "operator alice may act in region-a only, not region-b")
	if !e.logs.has("temporal call refused", "who=operator alice", "StartWorkflowExecution", "not region-b") {
		t.Fatalf("the refusal was not logged with who and what: %q", e.logs.recs)
	}
	_, err = alice.ExecuteWorkflow(ctx, taskOptions("deploy/region-a/bob", "region-a", workflows.TaskDeploy, "bob"), "Deploy")
	refused(t, err, `TmsStartedBy must be "alice"`)

	// Nothing changed: the refused starts left no workflow.
	for _, id := range []string{"deploy/region-b/alice", "deploy/region-a/bob"} {
		_, err := admin.DescribeWorkflowExecution(ctx, id, "")
		var nf *serviceerror.NotFound
		if !errors.As(err, &nf) {
			t.Fatalf("%s after a refused start: %v", id, err)
		}
	}

	// Cancel: looked up through the frontend with a worker token.
	if err := alice.CancelWorkflow(ctx, "deploy/region-a/alice", ""); err != nil {
		t.Fatalf("operator cancels a task of a granted region: %v", err)
	}
	refused(t, alice.CancelWorkflow(ctx, "deploy/region-b/admin", ""), "operator alice may act in region-a only, not region-b")

	// Viewer: reads, starts nothing.
	if _, err := vic.DescribeWorkflowExecution(ctx, "deploy/region-b/admin", ""); err != nil {
		t.Fatalf("viewer read: %v", err)
	}
	if _, err := vic.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{}); err != nil {
		t.Fatalf("viewer list: %v", err)
	}
	_, err = vic.ExecuteWorkflow(ctx, taskOptions("deploy/region-a/vic", "region-a", workflows.TaskDeploy, "vic"), "Deploy")
	refused(t, err, "viewer vic may only read, not StartWorkflowExecution")
	refused(t, vic.TerminateWorkflow(ctx, "deploy/region-b/admin", "", "x"), "viewer vic may only read")
	_, err = vic.SignalWithStartWorkflow(ctx, "deploy/region-a/vic2", "go", nil, taskOptions("deploy/region-a/vic2", "region-a", workflows.TaskDeploy, "vic"), "Deploy")
	refused(t, err, "viewer vic may only read, not SignalWithStartWorkflowExecution")
	vtags := workflows.TaskTags{Region: "region-a", Kind: workflows.TaskDeploy, StartedBy: "schedule:vic"}
	_, err = vic.ScheduleClient().Create(ctx, client.ScheduleOptions{ID: "vic", Spec: client.ScheduleSpec{},
		Action: &client.ScheduleWorkflowAction{ID: "deploy/region-a/vic3", Workflow: "Deploy", TaskQueue: activities.RegionQueue("region-a"), TypedSearchAttributes: vtags.StartAttributes()}})
	refused(t, err, "viewer vic may only read, not CreateSchedule")

	// Tokens that must not pass.
	other, _ := signing.GenerateKey()
	forged, _, _ := auth.Mint(other, auth.Claims{Subject: "root", Role: auth.RoleAdmin}, time.Now(), time.Hour)
	good := e.token(t, auth.Claims{Subject: "root", Role: auth.RoleAdmin}, time.Hour)
	flipped := []byte(good)
	flipped[len(signing.UserTokenPrefix)+3] ^= 0x02
	expired, _, _ := auth.Mint(e.key, auth.Claims{Subject: "root", Role: auth.RoleAdmin}, time.Now().Add(-2*time.Hour), time.Hour)
	for _, c := range []struct{ name, tok, rule string }{
		{"forged by another key", forged, "not signed by central's key"},
		{"a flipped byte", string(flipped), "token refused"},
		{"expired", expired, "your login expired at"},
		{"none", "", "no tms token: run tms login"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c2 := e.dial(t, c.tok)
			_, err := c2.ExecuteWorkflow(ctx, taskOptions("deploy/region-a/"+strings.ReplaceAll(c.name, " ", "-"), "region-a", workflows.TaskDeploy, "root"), "Deploy")
			refused(t, err, c.rule)
		})
	}
}

// A schedule fires under the authorizer: the server's scheduler starts its workflow through the
// internal-frontend, without a token.
func TestScheduleFiresUnderTheAuthorizer(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	alice := e.dial(t, e.token(t, auth.Claims{Subject: "alice", Role: auth.RoleOperator, Regions: []string{"region-a"}}, time.Hour))
	tags := workflows.TaskTags{Region: "region-a", Kind: workflows.TaskPowerOn, StartedBy: "schedule:morning"}
	h, err := alice.ScheduleClient().Create(ctx, client.ScheduleOptions{ID: "morning", Spec: client.ScheduleSpec{},
		Action: &client.ScheduleWorkflowAction{ID: "power-on/region-a/lab", Workflow: "Power", TaskQueue: activities.RegionQueue("region-a"),
			TypedSearchAttributes: tags.StartAttributes()}})
	if err != nil {
		t.Fatalf("operator creates a schedule in a granted region: %v", err)
	}
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatalf("operator triggers the schedule: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		d, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(d.Info.RecentActions); n > 0 {
			if d.Info.RecentActions[0].StartWorkflowResult == nil {
				t.Fatalf("the firing started nothing: %+v", d.Info.RecentActions[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schedule did not fire within a minute under the authorizer; refusals: %q", e.logs.recs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	bob := e.dial(t, e.token(t, auth.Claims{Subject: "bob", Role: auth.RoleOperator, Regions: []string{"region-b"}}, time.Hour))
	refused(t, bob.ScheduleClient().GetHandle(ctx, "morning").Pause(ctx, client.SchedulePauseOptions{}), "operator bob may act in region-b only, not region-a")
}

// The Temporal UI's HTTP API forwards the Authorization header to the same authorizer.
func TestUIHTTPAPI(t *testing.T) {
	e := start(t)
	base := "http://" + e.srv.UIAddress() + "/api/v1/namespaces/default/workflows"
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	call := func(method, url, tok string, body any) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, url, rd)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for _, c := range jar.Cookies(req.URL) {
			if c.Name == "_csrf" {
				req.Header.Set("X-CSRF-Token", c.Value)
			}
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	alice := e.token(t, auth.Claims{Subject: "alice", Role: auth.RoleOperator, Regions: []string{"region-a"}}, time.Hour)
	vic := e.token(t, auth.Claims{Subject: "vic", Role: auth.RoleViewer}, time.Hour)
	if code, body := call("GET", base, "", nil); code == http.StatusOK {
		t.Fatalf("a listing without a token: %d %s", code, body)
	}
	if code, body := call("GET", base, vic, nil); code != http.StatusOK {
		t.Fatalf("viewer lists through the UI: %d %s", code, body)
	}
	startBody := func(by, region string) map[string]any {
		return map[string]any{
			"workflowType": map[string]any{"name": "Deploy"},
			"taskQueue":    map[string]any{"name": "region." + region},
			"searchAttributes": map[string]any{"indexedFields": map[string]any{
				"TmsRegion":    map[string]any{"metadata": map[string]any{"encoding": "anNvbi9wbGFpbg=="}, "data": b64(`"` + region + `"`)},
				"TmsKind":      map[string]any{"metadata": map[string]any{"encoding": "anNvbi9wbGFpbg=="}, "data": b64(`"deploy"`)},
				"TmsStartedBy": map[string]any{"metadata": map[string]any{"encoding": "anNvbi9wbGFpbg=="}, "data": b64(`"` + by + `"`)},
			}},
		}
	}
	if code, body := call("POST", base+"/deploy-ui-alice", alice, startBody("alice", "region-a")); code != http.StatusOK {
		t.Fatalf("operator starts through the UI: %d %s", code, body)
	}
	if code, body := call("POST", base+"/deploy-ui-alice-b", alice, startBody("alice", "region-b")); code != http.StatusForbidden || !strings.Contains(body, "operator alice may act in region-a only, not region-b") {
		t.Fatalf("operator in another region through the UI: %d %s", code, body)
	}
	if code, body := call("POST", base+"/deploy-ui-vic", vic, startBody("vic", "region-a")); code != http.StatusForbidden || !strings.Contains(body, "viewer vic may only read") {
		t.Fatalf("viewer starts through the UI: %d %s", code, body)
	}
	if code, body := call("GET", base+"/deploy-ui-alice", vic, nil); code != http.StatusOK || !strings.Contains(body, "deploy-ui-alice") {
		t.Fatalf("viewer reads the operator's task through the UI: %d %s", code, body)
	}
}

func b64(s string) string { return base64Std(s) }

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
