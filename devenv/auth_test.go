package devenv_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"tms/devenv"
)

// With Auth, the Temporal UI's port serves a login page; after it, the browser's requests reach
// the UI's API with the user's token, and without it they are refused.
func TestAuthUILoginPage(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uiPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: filepath.Join(dir, "dev"), TemporalPort: -1, UIPort: uiPort,
		RegionPortBase: -1, CentralPort: -1, Regions: []string{"region-a"}, Terminals: -1, Auth: true})
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
}
