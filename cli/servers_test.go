package cli

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"tms/signing"
)

// tms central and tms region refuse a plaintext, unauthenticated Temporal connection before
// they try it, and say what to set; TLS, an API key or the insecure key lets them go on (here
// to a frontend that is not there).
func TestServersRefusePlaintextTemporal(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	key := filepath.Join(dir, "central.key")
	k, err := signing.CreateKeyFile(key)
	if err != nil {
		t.Fatal(err)
	}
	base := map[string]map[string]string{
		"central": {
			"TMS_CENTRAL_TEMPORAL_ADDRESS": closed,
			"TMS_CENTRAL_STORE":            filepath.Join(dir, "relay"),
			"TMS_CENTRAL_DATA_DIR":         filepath.Join(dir, "central"),
			"TMS_CENTRAL_SIGNING_KEY_FILE": key,
			"TMS_CENTRAL_LISTEN":           "127.0.0.1:0",
		},
		"region": {
			"TMS_REGION_TEMPORAL_ADDRESS":   closed,
			"TMS_REGION_ID":                 "room-1",
			"TMS_REGION_DATA_DIR":           filepath.Join(dir, "region"),
			"TMS_REGION_CENTRAL_PUBLIC_KEY": k.Public().String(),
			"TMS_REGION_LISTEN":             "127.0.0.1:0",
		},
	}
	const refused = "would be plaintext and unauthenticated, and is refused"
	for _, tc := range []struct {
		name, role string
		env        map[string]string
		flags      []string
		want       string
	}{
		{"central plaintext", "central", nil, nil, "central.temporal.insecure: the connection to Temporal at " + closed + " " + refused},
		{"central insecure flag", "central", nil, []string{"--central-temporal-insecure"}, "cannot reach Temporal at " + closed},
		{"central insecure env", "central", map[string]string{"TMS_CENTRAL_TEMPORAL_INSECURE": "true"}, nil, "cannot reach Temporal at " + closed},
		{"central TLS", "central", map[string]string{"TMS_CENTRAL_TEMPORAL_TLS_SERVER_NAME": "temporal.test"}, nil, "cannot reach Temporal at " + closed},
		{"region plaintext", "region", nil, nil, "region.temporal.insecure: the connection to Temporal at " + closed + " " + refused},
		{"region insecure flag", "region", nil, []string{"--region-temporal-insecure"}, "cannot reach Temporal at " + closed},
		{"region API key", "region", map[string]string{"TMS_REGION_TEMPORAL_API_KEY": "secret-key"}, nil, "cannot reach Temporal at " + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range base[tc.role] {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			code, _, errs := newRunner(env)(append([]string{tc.role}, tc.flags...)...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Fatalf("tms %s %v: exit %d, stderr %q; want it to say %q", tc.role, tc.flags, code, errs, tc.want)
			}
			if strings.Contains(errs, "secret-key") {
				t.Fatalf("the API key shows in %q", errs)
			}
		})
	}
}
