package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tms/auth"
	"tms/centralapi"
	"tms/devenv"
	"tms/internal/pgtest"
)

// runnerWith is a runner whose commands see env and read stdin.
func runnerWith(env map[string]string) func(stdin string, args ...string) (int, string, string) {
	return func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		off := false
		a := &App{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Progress: &off, Env: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		}, Now: func() time.Time { return testClock }}
		code := a.Run(context.Background(), args)
		return code, out.String(), errb.String()
	}
}

// TestLoginUsersAndAudit runs tms dev's environment with the authorizer, and the CLI as the
// admin it starts with, an operator and a viewer.
func TestLoginUsersAndAudit(t *testing.T) {
	dir := t.TempDir()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: filepath.Join(dir, "dev"), TemporalPort: -1, UIPort: -1, RegionPortBase: -1,
		CentralPort: -1, Regions: []string{"region-a", "region-b"}, Terminals: -1, Auth: true, Database: pgtest.StateFunc(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	if !env.AdminCreated || env.AdminPassword == "" {
		t.Fatalf("first admin: created %v, password %q", env.AdminCreated, env.AdminPassword)
	}
	if st, err := os.Stat(filepath.Join(dir, "dev", "admin-password")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin-password file: %v %v", st, err)
	}
	cfgHome := filepath.Join(dir, "config")
	run := runnerWith(map[string]string{"XDG_CONFIG_HOME": cfgHome})
	tms := func(stdin string, args ...string) string {
		t.Helper()
		code, out, errs := run(stdin, append([]string{"--temporal", env.TemporalAddress()}, args...)...)
		if code != 0 {
			t.Fatalf("tms %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	refused := func(code int, want, stdin string, args ...string) {
		t.Helper()
		got, out, errs := run(stdin, append([]string{"--temporal", env.TemporalAddress()}, args...)...)
		if got != code || !strings.Contains(errs, want) {
			t.Fatalf("tms %s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stderr to hold %q", strings.Join(args, " "), got, code, out, errs, want)
		}
	}
	central := env.CentralURL()
	creds := filepath.Join(cfgHome, "tms", "credentials.json")

	// Without a login, Temporal refuses, saying what to do.
	refused(1, "no tms token: run tms login", "", "task", "ls")
	refused(1, "wrong user name or password", "not the password\n", "login", "admin", "--password-stdin", "--central", central)
	refused(1, "plain http on another machine", "x\n", "login", "admin", "--password-stdin", "--central", "http://192.0.2.1:8300")
	if out := tms(env.AdminPassword+"\n", "login", "admin", "--password-stdin", "--central", central); !strings.Contains(out, "logged in as admin (admin) until") {
		t.Fatalf("login: %s", out)
	}
	if st, err := os.Stat(creds); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", st, err)
	}

	tms("alice's password\n", "user", "add", "alice", "--role", "operator", "--region", "region-a", "--password-stdin")
	tms("vic's password!\n", "user", "add", "vic", "--role", "viewer", "--password-stdin")
	refused(1, "exists already", "alice's password\n", "user", "add", "alice", "--role", "viewer", "--password-stdin")
	refused(2, "needs at least one --region", "", "user", "add", "bob", "--role", "operator", "--password-stdin")
	var users []centralapi.UserInfo
	if err := json.Unmarshal([]byte(tms("", "user", "ls", "--json")), &users); err != nil || len(users) != 3 || users[1].Name != "alice" || users[1].Regions[0] != "region-a" {
		t.Fatalf("user ls: %+v %v", users, err)
	}
	if out := tms("", "user", "ls"); !regexp.MustCompile(`alice +operator +region-a`).MatchString(out) || !regexp.MustCompile(`vic +viewer +-`).MatchString(out) {
		t.Fatalf("user ls text:\n%s", out)
	}
	tok := tms("", "region", "token", "region-b", "--expires", "48h")
	if c, err := auth.Verify(env.CentralKey, strings.TrimSpace(tok), time.Now()); err != nil || c.Role != auth.RoleWorker || !c.Grants("region-b") || len(c.Regions) != 1 {
		t.Fatalf("region token: %+v %v", c, err)
	}

	// The admin starts a task; it records who.
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	tms("", "image", "share", "lab", "--to", "region-a", "--at", at)
	share := "share/lab/region-a" + testStamp
	var rows []taskRow
	eventually(t, "the share to be listed", func() bool {
		rows = decode[[]taskRow](t, tms("", "task", "ls", "--json", "--by", "admin"))
		return len(rows) == 1
	})
	if rows[0].ID != share || rows[0].StartedBy != "admin" {
		t.Fatalf("task ls --by admin: %+v", rows)
	}
	if rows := decode[[]taskRow](t, tms("", "task", "ls", "--json", "--by", "alice")); len(rows) != 0 {
		t.Fatalf("task ls --by alice: %+v", rows)
	}
	if out := tms("", "task", "ls"); !regexp.MustCompile(`STARTED BY`).MatchString(out) || !regexp.MustCompile(regexp.QuoteMeta(share)+` .* admin +-`).MatchString(out) {
		t.Fatalf("task ls text:\n%s", out)
	}

	// The viewer reads and starts nothing; the refusal names the rule.
	tms("vic's password!\n", "login", "vic", "--password-stdin")
	if rows := decode[[]taskRow](t, tms("", "task", "ls", "--json")); len(rows) != 1 {
		t.Fatalf("viewer's task ls: %+v", rows)
	}
	refused(1, "viewer vic may only read", "", "image", "share", "lab", "--to", "region-a", "--at", at)
	refused(1, "that is for admins", "", "user", "ls")
	refused(1, "may change their own password only", "a new password\n", "user", "passwd", "alice", "--password-stdin")
	tms("vic's new password\n", "user", "passwd", "vic", "--password-stdin")

	// An expired login says so.
	b, _ := os.ReadFile(creds)
	var cr credentials
	json.Unmarshal(b, &cr)
	cr.Expires = time.Now().Add(-time.Minute)
	b, _ = json.Marshal(cr)
	os.WriteFile(creds, b, 0o600)
	refused(1, "your login expired at", "", "task", "ls")

	if out := tms("", "logout"); !strings.Contains(out, "logged out") {
		t.Fatalf("logout: %s", out)
	}
	if _, err := os.Stat(creds); !os.IsNotExist(err) {
		t.Fatalf("credentials after logout: %v", err)
	}
	refused(1, "no tms token", "", "task", "ls")
}
