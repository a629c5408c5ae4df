package dhcpd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCorruptLeaseFileStopsTheStart(t *testing.T) {
	lease := func(mac, ip string) string {
		return `{"mac":"` + mac + `","ip":"` + ip + `","expires":"2026-09-01T09:00:00Z","bound":true}`
	}
	for _, tc := range []struct {
		name, content, says string
	}{
		{"truncated", `{"version":1,"leases":[` + lease("52:54:00:00:10:01", "10.77.0.100"), "unexpected end"},
		{"not JSON", "\x00\x00\x00garbage", "invalid character"},
		{"another version", `{"version":7,"leases":[]}`, "version 7"},
		{"no version", `{"leases":[]}`, "version 0"},
		{"null lease", `{"version":1,"leases":[null]}`, "lease 0 is null"},
		{"bad MAC", `{"version":1,"leases":[` + lease("52:54:00:00:10", "10.77.0.100") + `]}`, `"52:54:00:00:10" is not a MAC`},
		{"MAC not as tms writes it", `{"version":1,"leases":[` + lease("52-54-00-00-10-01", "10.77.0.100") + `]}`, "is not a MAC"},
		{"IPv6 address", `{"version":1,"leases":[` + lease("52:54:00:00:10:01", "fe80::1") + `]}`, "is not IPv4"},
		{"no address", `{"version":1,"leases":[{"mac":"52:54:00:00:10:01"}]}`, "is not IPv4"},
		{"too large", `{"version":1,"leases":[` + strings.Repeat(" ", maxLeaseFile) + `]}`, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			cfg := fullConfig(&r)
			cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
			if err := os.WriteFile(cfg.LeaseFile, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := New(cfg)
			if !errors.Is(err, ErrLeaseFile) || !strings.Contains(err.Error(), cfg.LeaseFile) ||
				!strings.Contains(err.Error(), "move it away") || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("New: %v; want an error naming the file and saying %q", err, tc.says)
			}
			// The damaged file is left for the admin to look at.
			if b, _ := os.ReadFile(cfg.LeaseFile); !bytes.Equal(b, []byte(tc.content)) {
				t.Fatal("the damaged lease file was overwritten")
			}
		})
	}
}
