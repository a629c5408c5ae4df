package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"tms/agentwire"
)

// TestBootSendsBootToken checks that a boot request carries the disk, its size and the
// per-boot secret of the kernel command line, and that with Once and a "local" answer the
// agent returns after the one request (the in-memory OS then reboots).
func TestBootSendsBootToken(t *testing.T) {
	var got []agentwire.BootRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/agent/boot" {
			http.Error(w, `{"error":"unexpected"}`, http.StatusNotFound)
			return
		}
		var req agentwire.BootRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		got = append(got, req)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"action":"local"}`))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Region: u, MAC: "52:54:00:00:00:01", Disk: disk, BootToken: "s3cret", Once: true}
	if err := a.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d boot requests, want 1", len(got))
	}
	if r := got[0]; r.BootToken != "s3cret" || r.MAC != a.MAC || r.Disk != disk || r.DiskSize != 4096 {
		t.Errorf("boot request %+v", r)
	}
}
