package workers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
		if o.ConnectionOptions.TLS == nil {
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

// Dial connects to the Temporal frontend t names and checks that it answers, so a wrong address,
// a missing namespace or a refused certificate shows at start, in words an admin can act on.
func Dial(ctx context.Context, t config.Temporal, log *slog.Logger) (client.Client, error) {
	o, err := ClientOptions(t, log)
	if err != nil {
		return nil, err
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
