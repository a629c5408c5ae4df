package workers_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"tms/config"
	"tms/workers"
)

func TestDialRefusesBadSettings(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name string
		t    config.Temporal
		want string
	}{
		{"unreachable", config.Temporal{Address: closed}, "cannot reach Temporal at " + closed},
		{"half mTLS", config.Temporal{Address: closed, TLS: config.TLS{CertFile: "c.pem"}}, "go together"},
		{"missing CA", config.Temporal{Address: closed, TLS: config.TLS{CAFile: "/nonexistent/ca.pem"}}, "ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := workers.Dial(context.Background(), tc.t, nil)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestClientOptionsAPIKeyForcesTLS(t *testing.T) {
	o, err := workers.ClientOptions(config.Temporal{Address: "tms.example:7233", APIKey: "k"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.ConnectionOptions.TLS == nil || o.Credentials == nil || o.Namespace != "default" {
		t.Fatalf("options %+v: want TLS, credentials and the default namespace", o)
	}
}

func TestClientOptionsAPIKeyInClearOnlyToLoopbackOrWhenInsecure(t *testing.T) {
	for _, tc := range []struct {
		t     config.Temporal
		clear bool
	}{
		{config.Temporal{Address: "127.0.0.1:7233", APIKey: "k"}, true},
		{config.Temporal{Address: "localhost:7233", APIKey: "k"}, true},
		{config.Temporal{Address: "tms.example:7233", APIKey: "k", Insecure: true}, true},
		{config.Temporal{Address: "10.0.0.5:7233", APIKey: "k"}, false},
	} {
		o, err := workers.ClientOptions(tc.t, nil)
		if err != nil {
			t.Fatal(err)
		}
		if clear := o.ConnectionOptions.TLSDisabled && o.ConnectionOptions.TLS == nil; clear != tc.clear {
			t.Errorf("%s insecure=%v: in clear %v, want %v", tc.t.Address, tc.t.Insecure, clear, tc.clear)
		}
	}
}
