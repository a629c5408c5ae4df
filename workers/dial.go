package workers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tms/config"
)

// DialTimeout bounds how long Dial waits for the Temporal frontend to answer.
const DialTimeout = 15 * time.Second

// ClientOptions turns tms's Temporal configuration into the SDK's client options: the
// frontend's address and namespace, TLS (server-verified or mutual) and an API key. It
// builds a plaintext connection when t has neither TLS nor an API key; refusing one is
// config.Validate's job, for the servers' roles (see config.Temporal.Insecure).
func ClientOptions(t config.Temporal, log *slog.Logger) (client.Options, error) {
	o := client.Options{HostPort: t.Address, Namespace: t.Namespace}
	if o.HostPort == "" {
		o.HostPort = client.DefaultHostPort
	}
	if o.Namespace == "" {
		o.Namespace = client.DefaultNamespace
	}
	if log != nil {
		o.Logger = tlog.NewStructuredLogger(log)
	}
	tc, err := tlsConfig(t.TLS)
	if err != nil {
		return o, err
	}
	o.ConnectionOptions.TLS = tc
	if t.APIKey != "" {
		o.Credentials = client.NewAPIKeyStaticCredentials(t.APIKey)
		switch {
		case o.ConnectionOptions.TLS != nil:
		case IsLoopback(o.HostPort) || t.Insecure:
			// A frontend on this machine (tms dev), or a network the admin trusts
			// (temporal.insecure): the key goes in clear, as a login's token does.
			o.ConnectionOptions.TLSDisabled = true
		default:
			// An API key travels as a bearer token: never send it in clear text.
			o.ConnectionOptions.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	return o, nil
}

func tlsConfig(t config.TLS) (*tls.Config, error) {
	if t == (config.TLS{}) {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("temporal.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("temporal.tls.ca_file %s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("temporal.tls.cert_file and key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case t.CertFile != "" || t.KeyFile != "":
		return nil, errors.New("temporal.tls.cert_file and temporal.tls.key_file go together: set both for mutual TLS, or neither")
	}
	return c, nil
}

// Bearer makes o send, on every call, the token token returns (a tms login or worker token: see
// package auth). A bearer token never travels in clear text except to a loopback frontend (tms
// dev): o gets TLS unless it has it or the frontend is on loopback.
func Bearer(o *client.Options, token func(context.Context) (string, error)) {
	o.Credentials = client.NewAPIKeyDynamicCredentials(token)
	if o.ConnectionOptions.TLS == nil {
		if IsLoopback(o.HostPort) {
			o.ConnectionOptions.TLSDisabled = true
		} else {
			o.ConnectionOptions.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
}

// IsLoopback reports whether hostPort (host:port, or a URL's host) names a loopback address or
// localhost.
func IsLoopback(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		host = hostPort
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

// Dial connects to the Temporal frontend t names and checks that it answers, so a wrong address,
// a missing namespace or a refused certificate shows at start, in words an admin can act on.
func Dial(ctx context.Context, t config.Temporal, log *slog.Logger) (client.Client, error) {
	return DialToken(ctx, t, log, nil)
}

// DialToken is Dial with a bearer token on every call (see Bearer); nil token: none but t's API key.
func DialToken(ctx context.Context, t config.Temporal, log *slog.Logger, token func(context.Context) (string, error)) (client.Client, error) {
	o, err := ClientOptions(t, log)
	if err != nil {
		return nil, err
	}
	if token != nil {
		if t.APIKey != "" {
			return nil, errors.New("temporal.api_key and a tms login or worker token cannot both be sent: unset temporal.api_key")
		}
		if t.Insecure && o.ConnectionOptions.TLS == nil {
			// temporal.insecure: the admin trusts the network; the token goes in clear.
			o.ConnectionOptions.TLSDisabled = true
		}
		Bearer(&o, token)
	}
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	c, err := client.DialContext(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Temporal at %s (namespace %s): %w; is the server running, and is the address right?",
			o.HostPort, o.Namespace, err)
	}
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("the Temporal server at %s does not answer health checks: %w", o.HostPort, err)
	}
	return c, nil
}
