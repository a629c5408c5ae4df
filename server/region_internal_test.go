package server

import (
	"net"
	"testing"
)

func TestInClear(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		withTLS bool
		want    bool
	}{
		{"127.0.0.1:8081", false, false},
		{"[::1]:8081", false, false},
		{"[::ffff:127.0.0.1]:8081", false, false},
		{"0.0.0.0:8081", false, true},
		{"[::]:8081", false, true},
		{"10.0.5.2:8081", false, true},
		{"10.0.5.2:8081", true, false},
		{"[::]:8081", true, false},
	} {
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := inClear(a, tc.withTLS); got != tc.want {
			t.Errorf("inClear(%s, tls %v) = %v, want %v", tc.addr, tc.withTLS, got, tc.want)
		}
	}
}
