// Command tms-temporal is Temporal's server with tms's claim mapper and authorizer on its
// frontend (package tms/auth/temporalauth): a production Temporal cluster for tms runs it
// instead of temporal-server, so the rules of docs/security.md hold for the tms CLI and the
// Temporal UI alike.
//
//	tms-temporal --config-dir /etc/temporal/config --env production \
//	    --central-public-key /etc/tms/central.pub \
//	    --lookup-address temporal.example.org:7233 --lookup-token-file /etc/tms/authorizer.token
//
// The configuration is Temporal's usual YAML; it must define an internal-frontend service
// (with internode mTLS) so Temporal's system workers, which fire schedules, keep working.
// --lookup-token-file holds a worker token (tms region token authorizer --expires 8760h) the
// authorizer uses to look up the region of a task an operator cancels; it is read again on every
// lookup, so replacing the file renews it.
//
// `tms-temporal sql-tool …` is Temporal's temporal-sql-tool of the same server version, with its
// schemas embedded: it creates the databases and their schema before the first start (and
// updates them after an upgrade of the server), as docs/deploy.md shows:
//
//	tms-temporal sql-tool --plugin postgres12 --ep db.school.lan -u temporal --db temporal create
//	tms-temporal sql-tool --plugin postgres12 --ep db.school.lan -u temporal --db temporal setup-schema -v 0.0
//	tms-temporal sql-tool --plugin postgres12 --ep db.school.lan -u temporal --db temporal update-schema --schema-name postgresql/v12/temporal
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/log"
	_ "go.temporal.io/server/common/persistence/sql/sqlplugin/mysql"      // Temporal's SQL stores
	_ "go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql" // (as temporal-server has them)
	_ "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/temporal"
	sqltool "go.temporal.io/server/tools/sql"

	"tms/auth"
	"tms/auth/temporalauth"
	"tms/signing"
	"tms/workers"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sql-tool" {
		// The tool exits by itself on a failed command; this is for its usage errors.
		if err := sqltool.RunTool(append([]string{"tms-temporal sql-tool"}, os.Args[2:]...)); err != nil {
			fmt.Fprintln(os.Stderr, "tms-temporal sql-tool:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tms-temporal:", err)
		os.Exit(1)
	}
}

func run() error {
	configDir := flag.String("config-dir", "config", "directory of Temporal's configuration")
	env := flag.String("env", "development", "Temporal configuration environment (the file <env>.yaml)")
	zone := flag.String("zone", "", "availability zone")
	var services multiFlag
	flag.Var(&services, "service", "a service to run (repeat; default: frontend, history, matching, worker, and internal-frontend when configured)")
	pub := flag.String("central-public-key", "", "central's public key, tms-ed25519:… or a file holding it (tms central pubkey)")
	lookupAddr := flag.String("lookup-address", "", "the frontend's host:port, for the authorizer's lookups of tasks' regions")
	lookupToken := flag.String("lookup-token-file", "", "file holding the worker token the lookups send")
	lookupCA := flag.String("lookup-ca-file", "", "PEM CA that signed the frontend's certificate (default: the system's)")
	flag.Parse()

	key, err := signing.LoadPublicKey(*pub)
	if err != nil {
		return fmt.Errorf("--central-public-key: %w", err)
	}
	cfg, err := config.Load(config.WithEnv(*env), config.WithConfigDir(*configDir), config.WithZone(*zone))
	if err != nil {
		return fmt.Errorf("temporal configuration: %w", err)
	}
	if len(services) == 0 {
		services = append(services, temporal.DefaultServices...)
		if _, ok := cfg.Services["internal-frontend"]; ok {
			services = append(services, "internal-frontend")
		}
	}
	logger := log.NewZapLogger(log.BuildZapLogger(cfg.Log))
	slogger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	var lookup auth.Lookup
	if *lookupAddr != "" {
		if *lookupToken == "" {
			return errors.New("--lookup-address needs --lookup-token-file")
		}
		lookup, err = frontendLookup(*lookupAddr, *lookupToken, *lookupCA)
		if err != nil {
			return err
		}
	} else {
		slogger.Warn("no --lookup-address: operators may not cancel, terminate or signal tasks, nor change schedules")
	}
	a := temporalauth.New(temporalauth.Options{Key: key, Lookup: lookup, Log: slogger})
	s, err := temporal.NewServer(
		temporal.ForServices(services),
		temporal.WithConfig(cfg),
		temporal.WithLogger(logger),
		temporal.InterruptOn(temporal.InterruptCh()),
		temporal.WithAuthorizer(a),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return a }),
	)
	if err != nil {
		return fmt.Errorf("create the server: %w", err)
	}
	return s.Start()
}

// frontendLookup dials the frontend (on first use) with the token in tokenFile.
func frontendLookup(addr, tokenFile, caFile string) (*temporalauth.FrontendLookup, error) {
	o := client.Options{HostPort: addr}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--lookup-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--lookup-ca-file %s holds no PEM certificate", caFile)
		}
		o.ConnectionOptions.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	workers.Bearer(&o, func(context.Context) (string, error) { return readToken(tokenFile) })
	var (
		mu  sync.Mutex
		svc workflowservice.WorkflowServiceClient
	)
	return &temporalauth.FrontendLookup{Service: func() (workflowservice.WorkflowServiceClient, error) {
		mu.Lock()
		defer mu.Unlock()
		if svc == nil {
			c, err := client.NewLazyClient(o)
			if err != nil {
				return nil, err
			}
			svc = c.WorkflowService()
		}
		return svc, nil
	}}, nil
}

func readToken(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, auth.MaxTokenLen+2))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }
