package initos

import (
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tms/signing"
)

// TestLoadTrust checks what the in-memory OS makes of the key and CA files the boot
// environment may hold: absent files leave the agent without a key (it then refuses deploys)
// or with the system's roots; malformed ones stop the boot with a message.
func TestLoadTrust(t *testing.T) {
	k, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for _, tc := range []struct {
		name      string
		key, ca   string // file contents; "" for no file
		wantKey   bool
		wantRoots bool
		err       string
	}{
		{name: "neither file"},
		{name: "key and CA", key: k.Public().String() + "\n", ca: string(caPEM), wantKey: true, wantRoots: true},
		{name: "key only", key: k.Public().String() + "\n", wantKey: true},
		{name: "malformed key", key: "tms-ed25519:AAAA\n", err: "central key"},
		{name: "CA without a certificate", ca: "hello\n", err: "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			keyPath, caPath := filepath.Join(dir, "central.pub"), filepath.Join(dir, "ca.pem")
			if tc.key != "" {
				os.WriteFile(keyPath, []byte(tc.key), 0o644)
			}
			if tc.ca != "" {
				os.WriteFile(caPath, []byte(tc.ca), 0o644)
			}
			key, roots, err := LoadTrust(keyPath, caPath)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if key.IsZero() == tc.wantKey || (tc.wantKey && !key.Equal(k.Public())) {
				t.Fatalf("key %s", key)
			}
			if (roots != nil) != tc.wantRoots {
				t.Fatalf("roots %v", roots)
			}
			if roots != nil {
				c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
				resp, err := c.Get(srv.URL)
				if err != nil {
					t.Fatalf("HTTPS with the CA: %v", err)
				}
				resp.Body.Close()
			}
		})
	}
}
