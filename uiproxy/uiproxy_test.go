package uiproxy

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/auth"
	"tms/centralapi"
	"tms/signing"
	"tms/state"
)

func TestLoginPageAddsTheHeader(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cat, err := state.OpenCatalog(ctx, filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	key, _ := signing.GenerateKey()
	pw, _, err := centralapi.FirstAdmin(ctx, cat, filepath.Join(dir, "pw"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The UI stand-in records what reaches it.
	var mu sync.Mutex
	var gotAuth, gotCookie []string
	ui := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotAuth = append(gotAuth, r.Header.Get("Authorization"))
		gotCookie = append(gotCookie, r.Header.Get("Cookie"))
		mu.Unlock()
		io.WriteString(w, "the UI")
	}))
	defer ui.Close()
	u, _ := url.Parse(ui.URL)
	px := httptest.NewServer(New(Options{Upstream: u, Login: centralapi.New(centralapi.Options{Users: cat, Key: key})}))
	defer px.Close()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}

	get := func(path string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", px.URL+path, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("/namespaces/default/workflows"); resp.Request.URL.Path != "/tms-login" || !strings.Contains(body, "Log in") {
		t.Fatalf("a browser without a login went to %s: %s", resp.Request.URL, body)
	}
	post := func(user, pass string) (*http.Response, string) {
		resp, err := hc.PostForm(px.URL+"/tms-login", url.Values{"user": {user}, "password": {pass}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := post("admin", "wrong password"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "wrong user name or password") {
		t.Fatalf("wrong password: %d %s", resp.StatusCode, body)
	}
	if resp, body := post("admin", pw); resp.StatusCode != http.StatusOK || body != "the UI" {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var c *http.Cookie
	for _, k := range jar.Cookies(mustURL(px.URL)) {
		if k.Name == Cookie {
			c = k
		}
	}
	if c == nil {
		t.Fatal("no token cookie after the login")
	}
	claims, err := auth.Verify(key.Public(), c.Value, time.Now())
	if err != nil || claims.Subject != "admin" {
		t.Fatalf("cookie: %+v %v", claims, err)
	}
	get("/api/v1/namespaces/default/workflows")
	mu.Lock()
	last, lastCookie := gotAuth[len(gotAuth)-1], gotCookie[len(gotCookie)-1]
	mu.Unlock()
	if last != "Bearer "+c.Value || strings.Contains(lastCookie, Cookie) {
		t.Fatalf("forwarded Authorization %q, Cookie %q", last, lastCookie)
	}
	// Logged out: the header is gone.
	hc.Get(px.URL + "/tms-logout")
	req, _ := http.NewRequest("GET", px.URL+"/api/v1/x", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if gotAuth[len(gotAuth)-1] != "" {
		t.Fatalf("after logout the proxy still sends %q", gotAuth[len(gotAuth)-1])
	}
}

func mustURL(s string) *url.URL { u, _ := url.Parse(s); return u }

type refuseAll struct{}

func (refuseAll) Login(context.Context, string, string, string) (centralapi.LoginResponse, int, error) {
	return centralapi.LoginResponse{}, http.StatusUnauthorized, auth.ErrPassword
}

// FuzzLoginForm: whatever the form, a refused login sets no cookie and forwards nothing.
func FuzzLoginForm(f *testing.F) {
	u, _ := url.Parse("http://127.0.0.1:1")
	h := New(Options{Upstream: u, Login: refuseAll{}})
	for _, s := range []string{"user=admin&password=x", "", "%zz", "user=" + strings.Repeat("a", 9000), "a=b;c=d&&&="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/tms-login", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code < 400 || len(w.Result().Cookies()) > 0 {
			t.Fatalf("%q: %d, cookies %v", body, w.Code, w.Result().Cookies())
		}
	})
}
