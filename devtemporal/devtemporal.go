// Package devtemporal runs a Temporal server (frontend, history, matching and worker services)
// inside the tms process, with its state in a SQLite file, and optionally the Temporal UI. It
// is what `tms dev` and the integration tests talk to; production runs against an external
// Temporal cluster.
//
//	srv, err := devtemporal.Start(devtemporal.Options{DataDir: dir, Port: 7233, UIPort: 8233})
//	defer srv.Stop()
//	c, err := client.Dial(client.Options{HostPort: srv.Address()})
//
// State survives a restart when DataDir is set: the next Start with the same directory finds
// its workflows where they were.
package devtemporal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
	enumspb "go.temporal.io/api/enums/v1"
	sdktemporal "go.temporal.io/sdk/temporal"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"

	"tms/workflows"
)

// Options describe the embedded server.
type Options struct {
	// DataDir holds the SQLite database (temporal.db). Empty: in memory, gone at Stop.
	DataDir string
	// Host is the address every service listens on (default 127.0.0.1).
	Host string
	// Port is the frontend's gRPC port (0: a free port).
	Port int
	// UIPort is the Temporal UI's HTTP port; 0 runs no UI.
	UIPort int
	// Namespaces are created if missing (default: "default").
	Namespaces []string
	// SearchAttributes are registered in namespaces it creates (default: those of tms tasks,
	// workflows.SearchAttributes; central registers them too when it starts).
	SearchAttributes []sdktemporal.SearchAttributeKey
	// Log receives the server's log; Level filters it (default: warnings and errors).
	Log   *slog.Logger
	Level slog.Level
	// Authorizer and ClaimMapper decide every call to the frontend (tms's: package
	// auth/temporalauth). Nil: the server's defaults, which allow everything. With an
	// Authorizer, the server also runs an internal-frontend on a loopback port of its own, for
	// its system workers (schedules, batch operations): their calls carry no token, and the
	// internal-frontend gives them the server's internal principal instead.
	Authorizer  authorization.Authorizer
	ClaimMapper authorization.ClaimMapper
	// SQLitePragmas are set on every connection to the database file, e.g. journal_mode=wal
	// and synchronous=normal (SQLite's defaults when empty); SQLiteConns is how many
	// connections the server opens (default 1; more only with journal_mode=wal, which lets
	// readers go on beside the one writer). The district-scale bench sets them
	// (docs/performance.md, "District scale").
	SQLitePragmas map[string]string
	SQLiteConns   int
	// DynamicConfig sets the server's dynamic configuration by key (for example
	// "frontend.namespaceCount"), over the settings this package chooses. The district-scale
	// bench raises the limits a thousand regions' pollers reach (docs/performance.md, "District
	// scale").
	DynamicConfig map[string]any
	// Postgres, when set, keeps the server's state in PostgreSQL instead of SQLite (DataDir is
	// then unused): a local cluster as docs/deploy.md makes one, for the district-scale bench.
	Postgres *Postgres
}

// Server is a running embedded Temporal.
type Server struct {
	srv    temporal.Server
	ui     *uiserver.Server
	addr   string
	uiAddr string
}

// Address is the frontend's host:port, for client.Dial.
func (s *Server) Address() string { return s.addr }

// UIAddress is the UI's host:port, or "" when it does not run.
func (s *Server) UIAddress() string { return s.uiAddr }

const clusterName = "active"

// Start starts the server and returns when the frontend accepts connections.
func Start(o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if len(o.Namespaces) == 0 {
		o.Namespaces = []string{"default"}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Level == 0 {
		o.Level = slog.LevelWarn
	}
	ports, err := freePorts(o.Host, 7)
	if err != nil {
		return nil, err
	}
	if o.Port == 0 {
		o.Port = ports[4]
	} else if err := portFree(o.Host, o.Port); err != nil {
		return nil, fmt.Errorf("temporal frontend: %w", err)
	}
	if o.UIPort != 0 {
		if err := portFree(o.Host, o.UIPort); err != nil {
			return nil, fmt.Errorf("temporal UI: %w", err)
		}
	}
	hostPort := func(p int) string { return net.JoinHostPort(o.Host, strconv.Itoa(p)) }

	sqlConf := &config.SQL{PluginName: sqliteplugin.PluginName, ConnectAttributes: map[string]string{}}
	switch {
	case o.Postgres != nil:
	case o.DataDir == "":
		sqlConf.ConnectAttributes["mode"] = "memory"
		sqlConf.ConnectAttributes["cache"] = "shared"
		sqlConf.DatabaseName = "tms-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(ports[0])
	default:
		if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
			return nil, err
		}
		sqlConf.ConnectAttributes["mode"] = "rwc"
		for k, v := range o.SQLitePragmas {
			sqlConf.ConnectAttributes[k] = v
		}
		sqlConf.MaxConns, sqlConf.MaxIdleConns = o.SQLiteConns, o.SQLiteConns
		sqlConf.DatabaseName = filepath.Join(o.DataDir, "temporal.db")
		if _, err := os.Stat(sqlConf.DatabaseName); errors.Is(err, os.ErrNotExist) {
			if err := sqliteschema.SetupSchema(sqlConf); err != nil {
				return nil, fmt.Errorf("temporal: set up the database %s: %w", sqlConf.DatabaseName, err)
			}
		}
	}
	if o.SearchAttributes == nil {
		o.SearchAttributes = workflows.SearchAttributes()
	}
	// On PostgreSQL they are registered through the frontend once it runs (registerNamespaces).
	if o.Postgres == nil {
		if err := createSQLiteNamespaces(sqlConf, o.Namespaces, o.SearchAttributes); err != nil {
			return nil, err
		}
	}

	svc := func(grpc, http int) config.Service {
		var c config.Service
		c.RPC.GRPCPort, c.RPC.HTTPPort, c.RPC.BindOnIP = grpc, http, o.Host
		return c
	}
	conf := &config.Config{}
	conf.Global.Membership = config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: o.Host}
	conf.Persistence = config.Persistence{
		DefaultStore: "sqlite", VisibilityStore: "sqlite", NumHistoryShards: 1,
		DataStores: map[string]config.DataStore{"sqlite": {SQL: sqlConf}},
	}
	if o.Postgres != nil {
		conf.Persistence = o.Postgres.persistence()
	}
	conf.ClusterMetadata = &cluster.Config{
		FailoverVersionIncrement: 10, MasterClusterName: clusterName, CurrentClusterName: clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{clusterName: {
			Enabled: true, InitialFailoverVersion: 1, RPCAddress: hostPort(o.Port), HTTPAddress: hostPort(ports[3]),
		}},
	}
	conf.DCRedirectionPolicy.Policy = "noop"
	conf.Services = map[string]config.Service{
		"frontend": svc(o.Port, ports[3]),
		"history":  svc(ports[0], 0),
		"matching": svc(ports[1], 0),
		"worker":   svc(ports[2], 0),
	}
	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	conf.PublicClient.HostPort = hostPort(o.Port)
	services := temporal.DefaultServices
	hosts := map[primitives.ServiceName]static.Hosts{
		primitives.FrontendService: static.SingleLocalHost(hostPort(o.Port)),
		primitives.HistoryService:  static.SingleLocalHost(hostPort(ports[0])),
		primitives.MatchingService: static.SingleLocalHost(hostPort(ports[1])),
		primitives.WorkerService:   static.SingleLocalHost(hostPort(ports[2])),
	}
	if o.Authorizer != nil {
		// The system workers dial the internal-frontend (the server picks it when the
		// configuration has one and PublicClient names no address).
		conf.Services[string(primitives.InternalFrontendService)] = svc(ports[5], ports[6])
		hosts[primitives.InternalFrontendService] = static.SingleLocalHost(hostPort(ports[5]))
		services = append(append([]string(nil), services...), string(primitives.InternalFrontendService))
		conf.PublicClient.HostPort = ""
	}

	logger := &slogLogger{log: o.Log, level: o.Level}
	authorizer, claims := o.Authorizer, o.ClaimMapper
	if authorizer == nil {
		if authorizer, err = authorization.GetAuthorizerFromConfig(&conf.Global.Authorization); err != nil {
			return nil, err
		}
	}
	if claims == nil {
		if claims, err = authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger); err != nil {
			return nil, err
		}
	}
	dyn := dynamicconfig.StaticClient{
		dynamicconfig.HistoryCacheHostLevelMaxSize.Key():                 8192,
		dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(): 100,
	}
	for k, v := range o.DynamicConfig {
		dyn[dynamicconfig.MakeKey(k)] = v
	}
	start := func() (temporal.Server, error) {
		srv, err := temporal.NewServer(
			temporal.WithConfig(conf),
			temporal.ForServices(services),
			temporal.WithStaticHosts(hosts),
			temporal.WithLogger(logger),
			temporal.WithAuthorizer(authorizer),
			temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claims }),
			temporal.WithDynamicConfigClient(dyn),
		)
		if err != nil {
			return nil, fmt.Errorf("temporal: %w", err)
		}
		if err := srv.Start(); err != nil {
			return nil, fmt.Errorf("temporal: start: %w", err)
		}
		return srv, nil
	}
	srv, err := start()
	if err != nil {
		return nil, err
	}
	if o.Postgres != nil {
		added, err := registerNamespaces(hostPort(o.Port), o.Namespaces, o.SearchAttributes)
		if err != nil {
			srv.Stop()
			return nil, err
		}
		if added {
			// The frontend reads search attributes from a cache it refreshes every minute: a
			// restart has it read the new ones at once.
			srv.Stop()
			if srv, err = start(); err != nil {
				return nil, err
			}
		}
	}
	s := &Server{srv: srv, addr: hostPort(o.Port)}
	if o.UIPort != 0 {
		s.uiAddr = hostPort(o.UIPort)
		s.ui = uiserver.NewServer(uioptions.WithConfigProvider(&uiconfig.Config{
			Host: o.Host, Port: o.UIPort, TemporalGRPCAddress: s.addr, EnableUI: true,
			CORS: uiconfig.CORS{CookieInsecure: true}, HideLogs: true, DisableNewsFetch: true,
		}))
		go func() {
			if err := s.ui.Start(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.Log.Error("temporal UI stopped", "err", err)
			}
		}()
		// Return when the UI answers, so a caller may use it at once.
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			c, err := net.DialTimeout("tcp", s.uiAddr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				s.Stop()
				return nil, fmt.Errorf("temporal UI: not listening on %s after 15s: %w", s.uiAddr, err)
			}
		}
	}
	return s, nil
}

// createSQLiteNamespaces creates the namespaces missing from the SQLite database, each with the
// search attributes.
func createSQLiteNamespaces(conf *config.SQL, namespaces []string, keys []sdktemporal.SearchAttributeKey) error {
	attrs := map[string]enumspb.IndexedValueType{}
	for _, k := range keys {
		attrs[k.GetName()] = k.GetValueType()
	}
	var nss []*sqliteschema.NamespaceConfig
	for _, ns := range namespaces {
		nc, err := sqliteschema.NewNamespaceConfig(clusterName, ns, false, attrs)
		if err != nil {
			return fmt.Errorf("temporal: namespace %s: %w", ns, err)
		}
		nss = append(nss, nc)
	}
	if err := sqliteschema.CreateNamespaces(conf, nss...); err != nil {
		return fmt.Errorf("temporal: create namespaces: %w", err)
	}
	return nil
}

// Stop stops the UI and the server.
func (s *Server) Stop() {
	if s.ui != nil {
		s.ui.Stop()
	}
	s.srv.Stop()
}

func freePorts(host string, n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("temporal: find a free port on %s: %w", host, err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portFree(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("cannot listen on %s:%d (is another Temporal or tms dev running?): %w", host, port, err)
	}
	return l.Close()
}

// slogLogger feeds the server's log into slog.
type slogLogger struct {
	log   *slog.Logger
	level slog.Level
	tags  []tag.Tag
}

var _ log.Logger = (*slogLogger)(nil)

func (l *slogLogger) emit(lvl slog.Level, msg string, tags []tag.Tag) {
	if lvl < l.level {
		return
	}
	attrs := make([]any, 0, 2*(len(l.tags)+len(tags)))
	for _, t := range append(l.tags, tags...) {
		attrs = append(attrs, t.Key(), t.Value())
	}
	l.log.Log(context.Background(), lvl, msg, attrs...) // the server's logger interface carries no context
}

func (l *slogLogger) Debug(msg string, tags ...tag.Tag)  { l.emit(slog.LevelDebug, msg, tags) }
func (l *slogLogger) Info(msg string, tags ...tag.Tag)   { l.emit(slog.LevelInfo, msg, tags) }
func (l *slogLogger) Warn(msg string, tags ...tag.Tag)   { l.emit(slog.LevelWarn, msg, tags) }
func (l *slogLogger) Error(msg string, tags ...tag.Tag)  { l.emit(slog.LevelError, msg, tags) }
func (l *slogLogger) DPanic(msg string, tags ...tag.Tag) { l.emit(slog.LevelError, msg, tags) }
func (l *slogLogger) Panic(msg string, tags ...tag.Tag) {
	l.emit(slog.LevelError, msg, tags)
	panic(msg)
}
func (l *slogLogger) Fatal(msg string, tags ...tag.Tag) {
	l.emit(slog.LevelError, msg, tags)
	os.Exit(1)
}

// With implements log.WithLogger.
func (l *slogLogger) With(tags ...tag.Tag) log.Logger {
	return &slogLogger{log: l.log, level: l.level, tags: append(append([]tag.Tag(nil), l.tags...), tags...)}
}
