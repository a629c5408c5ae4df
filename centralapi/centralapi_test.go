package centralapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/auth"
	"tms/signing"
	"tms/state"
)

type fixture struct {
	srv   *httptest.Server
	key   *signing.PrivateKey
	cat   *state.Catalog
	admin string // the first admin's password
}

func newFixture(t *testing.T, o Options) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cat, err := state.OpenCatalog(ctx, filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pw, created, err := FirstAdmin(ctx, cat, filepath.Join(dir, "admin-password"), time.Now())
	if err != nil || !created || pw == "" {
		t.Fatalf("first admin: %q %v %v", pw, created, err)
	}
	o.Users, o.Key = cat, key
	srv := httptest.NewServer(New(o))
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, key: key, cat: cat, admin: pw}
}

func (f *fixture) do(t *testing.T, method, path, tok string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) login(t *testing.T, user, pw string) LoginResponse {
	t.Helper()
	code, body := f.do(t, "POST", "/v1/login", "", LoginRequest{User: user, Password: pw})
	if code != http.StatusOK {
		t.Fatalf("login %s: %d %s", user, code, body)
	}
	var lr LoginResponse
	if err := json.Unmarshal([]byte(body), &lr); err != nil {
		t.Fatal(err)
	}
	return lr
}

func TestLoginAndUsers(t *testing.T) {
	f := newFixture(t, Options{})
	admin := f.login(t, "admin", f.admin)
	c, err := auth.Verify(f.key.Public(), admin.Token, time.Now())
	if err != nil || c.Role != auth.RoleAdmin || c.Subject != "admin" || c.Expires.Sub(c.IssuedAt) != auth.DefaultLoginLife {
		t.Fatalf("admin's token: %+v %v", c, err)
	}
	if code, body := f.do(t, "POST", "/v1/users", admin.Token, AddUserRequest{Name: "alice", Role: "operator", Regions: []string{"region-a"}, Password: "alice's password"}); code != http.StatusCreated {
		t.Fatalf("add alice: %d %s", code, body)
	}
	if code, body := f.do(t, "POST", "/v1/users", admin.Token, AddUserRequest{Name: "alice", Role: "viewer", Password: "another password"}); code != http.StatusConflict {
		t.Fatalf("add alice again: %d %s", code, body)
	}
	alice := f.login(t, "alice", "alice's password")
	if alice.Role != auth.RoleOperator || len(alice.Regions) != 1 || alice.Regions[0] != "region-a" {
		t.Fatalf("alice's login: %+v", alice)
	}
	code, body := f.do(t, "GET", "/v1/users", admin.Token, nil)
	if code != http.StatusOK || !strings.Contains(body, `"alice"`) || strings.Contains(body, "argon2") {
		t.Fatalf("users: %d %s", code, body)
	}
	cases := []struct {
		name, method, path, tok string
		body                    any
		code                    int
		want                    string
	}{
		{"an operator lists users", "GET", "/v1/users", alice.Token, nil, 403, "operator alice may not manage users"},
		{"no token", "GET", "/v1/users", "", nil, 401, "no token: run tms login"},
		{"a forged token", "GET", "/v1/users", forge(t), nil, 401, "not signed by central's key"},
		{"a bad role", "POST", "/v1/users", admin.Token, AddUserRequest{Name: "bob", Role: "root", Password: "bob's password"}, 400, "want admin, operator or viewer"},
		{"an operator without regions", "POST", "/v1/users", admin.Token, AddUserRequest{Name: "bob", Role: "operator", Password: "bob's password"}, 400, "at least one --region"},
		{"a short password", "POST", "/v1/users", admin.Token, AddUserRequest{Name: "bob", Role: "viewer", Password: "short"}, 400, "password too short"},
		{"an unknown field", "POST", "/v1/users", admin.Token, `{"name":"bob","role":"viewer","password":"bob's password","admin":true}`, 400, "unknown field"},
		{"two values", "POST", "/v1/login", "", `{"user":"alice","password":"x"}{}`, 400, "more than one value"},
		{"a body too large", "POST", "/v1/login", "", `{"user":"alice","password":"` + strings.Repeat("x", MaxBody) + `"}`, 413, "larger than"},
		{"alice changes bob's password", "PUT", "/v1/users/admin/password", alice.Token, PasswordRequest{Password: "a new password"}, 403, "may change their own password only"},
		{"alice changes her password", "PUT", "/v1/users/alice/password", alice.Token, PasswordRequest{Password: "alice's new password"}, 204, ""},
		{"removing the last admin", "DELETE", "/v1/users/admin", admin.Token, nil, 409, "last admin"},
		{"removing nobody", "DELETE", "/v1/users/nobody", admin.Token, nil, 404, "no user nobody"},
		{"a region token for an operator", "POST", "/v1/regions/region-a/token", alice.Token, `{}`, 403, "for admins"},
		{"a region token too long", "POST", "/v1/regions/region-a/token", admin.Token, `{"expires":"100000h"}`, 400, "at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := f.do(t, c.method, c.path, c.tok, c.body)
			if code != c.code || !strings.Contains(body, c.want) {
				t.Fatalf("%d %s; want %d saying %q", code, body, c.code, c.want)
			}
			if code >= 400 && !strings.HasPrefix(body, `{"error":`) {
				t.Fatalf("error body is not JSON: %s", body)
			}
		})
	}
	// Alice's new password works, the old one does not.
	if code, _ := f.do(t, "POST", "/v1/login", "", LoginRequest{User: "alice", Password: "alice's password"}); code != 401 {
		t.Fatalf("old password: %d", code)
	}
	f.login(t, "alice", "alice's new password")

	code, body = f.do(t, "POST", "/v1/regions/region-a/token", admin.Token, RegionTokenRequest{Expires: "48h"})
	var rt RegionTokenResponse
	json.Unmarshal([]byte(body), &rt)
	rc, err := auth.Verify(f.key.Public(), rt.Token, time.Now())
	if code != 200 || err != nil || rc.Role != auth.RoleWorker || !rc.Grants("region-a") || len(rc.Regions) != 1 || rc.Expires.Sub(rc.IssuedAt) != 48*time.Hour {
		t.Fatalf("region token: %d %s %+v %v", code, body, rc, err)
	}
	if code, body := f.do(t, "DELETE", "/v1/users/alice", admin.Token, nil); code != 204 {
		t.Fatalf("remove alice: %d %s", code, body)
	}
	if code, _ := f.do(t, "POST", "/v1/login", "", LoginRequest{User: "alice", Password: "alice's new password"}); code != 401 {
		t.Fatalf("removed alice logs in: %d", code)
	}
}

func forge(t *testing.T) string {
	k, _ := signing.GenerateKey()
	tok, _, err := auth.Mint(k, auth.Claims{Subject: "admin", Role: auth.RoleAdmin}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoginRefusals(t *testing.T) {
	f := newFixture(t, Options{PerUser: &auth.Limiter{Burst: 3, Every: time.Hour}, PerAddress: &auth.Limiter{Burst: 7, Every: time.Hour}})
	for _, c := range []struct {
		name string
		req  LoginRequest
		code int
		want string
	}{
		{"wrong password", LoginRequest{User: "admin", Password: "not the password"}, 401, "wrong user name or password"},
		{"no such user", LoginRequest{User: "nobody", Password: "not the password"}, 401, "wrong user name or password"},
		{"a bad name", LoginRequest{User: "Robert'); DROP", Password: "x"}, 401, "wrong user name or password"},
		{"wrong password again", LoginRequest{User: "admin", Password: "not it either"}, 401, "wrong user name or password"},
		{"wrong password a third time", LoginRequest{User: "admin", Password: "nor this"}, 401, "wrong user name or password"},
		{"the right password, too late: per user", LoginRequest{User: "admin", Password: f.admin}, 429, "too many login attempts for admin"},
		{"another user, 7th from this address", LoginRequest{User: "nobody", Password: "x"}, 401, ""},
		{"8th from this address", LoginRequest{User: "other", Password: "x"}, 429, "too many login attempts from 127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := f.do(t, "POST", "/v1/login", "", c.req)
			if code != c.code || !strings.Contains(body, c.want) {
				t.Fatalf("%d %s; want %d saying %q", code, body, c.code, c.want)
			}
		})
	}
}

func TestFirstAdminKeepsItsPassword(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cat, err := state.OpenCatalog(ctx, filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	file := filepath.Join(dir, "admin-password")
	pw, created, err := FirstAdmin(ctx, cat, file, time.Now())
	if err != nil || !created {
		t.Fatal(created, err)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", st, err)
	}
	again, created, err := FirstAdmin(ctx, cat, file, time.Now())
	if err != nil || created || again != pw {
		t.Fatalf("second start: %q %v %v, want %q", again, created, err, pw)
	}
	u, _ := cat.User(ctx, "admin")
	if auth.CheckPassword(u.PasswordHash, pw) != nil {
		t.Fatal("the printed password does not match the stored hash")
	}
}

// FuzzLogin feeds the login endpoint any body: it answers with JSON and never a token.
func FuzzLogin(f *testing.F) {
	ctx := context.Background()
	cat, err := state.OpenCatalog(ctx, filepath.Join(f.TempDir(), "catalog.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer cat.Close()
	key, _ := signing.GenerateKey()
	h := New(Options{Users: cat, Key: key, PerUser: &auth.Limiter{Burst: 1 << 30, Every: time.Nanosecond}, PerAddress: &auth.Limiter{Burst: 1 << 30, Every: time.Nanosecond}})
	for _, s := range []string{`{"user":"admin","password":"x"}`, `{}`, `[]`, `{"user":1}`, `{"user":"a","password":"b"}{}`, "\x00", `{"user":"` + strings.Repeat("a", 100) + `"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/login", strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:1"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code == http.StatusOK || strings.Contains(w.Body.String(), "token") {
			t.Fatalf("%q: %d %s", body, w.Code, w.Body)
		}
		var e Error
		if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" {
			t.Fatalf("%q: not a JSON error: %s", body, w.Body)
		}
	})
}

func TestAPIRateLimit(t *testing.T) {
	f := newFixture(t, Options{API: &auth.Limiter{Burst: 2, Every: time.Hour}})
	for i, want := range []int{401, 401, 429} {
		if code, body := f.do(t, "GET", "/v1/users", "", nil); code != want {
			t.Fatalf("call %d: %d %s, want %d", i+1, code, body, want)
		}
	}
	// Logins have limits of their own.
	f.login(t, "admin", f.admin)
}
