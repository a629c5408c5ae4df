package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tms/agent"
	"tms/signing"
)

// TestParseRun checks that the run mode loads the terminal's agent key and central's public
// key from the files its flags name, and refuses what it cannot use with the flag's name.
func TestParseRun(t *testing.T) {
	dir := t.TempDir()
	priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(dir, "central.pub")
	if err := os.WriteFile(pubFile, []byte("# central\n"+priv.Public().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	keyFile := filepath.Join(dir, "agent.key")
	if err := os.WriteFile(keyFile, []byte(agent.FormatKey(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	openKey := filepath.Join(dir, "open.key")
	if err := os.WriteFile(openKey, []byte(agent.FormatKey(key)), 0o644); err != nil {
		t.Fatal(err)
	}
	badPub := filepath.Join(dir, "bad.pub")
	if err := os.WriteFile(badPub, []byte("tms-ed25519:AAAA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--region", "http://10.98.0.1:8301", "--mac", "52:54:00:01:00:01", "--disk", "pc1.disk", "--once"}

	a, err := parseRun(append(base, "--key-file", keyFile, "--central-key", pubFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Key, key) || !a.CentralKey.Equal(priv.Public()) || !a.Once || a.Disk != "pc1.disk" || a.Region.Host != "10.98.0.1:8301" {
		t.Fatalf("parsed agent: key %x, central key %v, once %v, disk %q, region %v", a.Key, a.CentralKey, a.Once, a.Disk, a.Region)
	}
	a, err = parseRun(base)
	if err != nil || a.Key != nil || !a.CentralKey.IsZero() {
		t.Fatalf("without key flags: key %x, central key %v, %v", a.Key, a.CentralKey, err)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing key file", []string{"--key-file", filepath.Join(dir, "none")}, "--key-file"},
		{"key file readable by others", []string{"--key-file", openKey}, "readable by others"},
		{"missing central key", []string{"--central-key", filepath.Join(dir, "none")}, "--central-key"},
		{"malformed central key", []string{"--central-key", badPub}, "--central-key"},
		{"central key given as text", []string{"--central-key", priv.Public().String()}, "names a file"},
		{"no region", []string{"--region", ""}, "--region"},
		{"region not http", []string{"--region", "ftp://x"}, "not an http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseRun(append(append([]string{}, base...), tc.args...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
