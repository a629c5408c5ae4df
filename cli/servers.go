package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tms/auth"
	"tms/centralapi"
	"tms/config"
	"tms/server"
	"tms/signing"
	"tms/store"
	"tms/workers"
)

// centralCommand runs central's server for production, against an external Temporal.
func (a *App) centralCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "central",
		Short: "Run the central server: the catalog, image sharing and relay (Temporal task queue central)",
		Long: `Run the central server until it is stopped (SIGINT or SIGTERM).

It needs central.temporal (the Temporal frontend), central.store (the relay store), central.data_dir
(the catalog database) and central.signing_key_file (central's ed25519 key, which signs every image
version central registers and every transfer grant; tms central init creates it): from the
configuration file, TMS_CENTRAL_* variables or the flags below.

It refuses a Temporal connection with neither TLS (central.temporal.tls.*) nor an API key
(central.temporal.api_key) unless central.temporal.insecure is set (--central-temporal-insecure).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, log, err := a.serverConfig(cmd.Flags(), config.RoleCentral)
			if err != nil {
				return err
			}
			key, err := signing.LoadKeyFile(cfg.Central.SigningKeyFile)
			if err != nil {
				return fmt.Errorf("central.signing_key_file: %w", err)
			}
			relay, err := a.storeAt(ctx, cfg.Central.Store, cfg.Store.S3, true)
			if err != nil {
				return fmt.Errorf("central.store: %w", err)
			}
			// Central's worker presents a short-lived worker token it mints itself, for a
			// Temporal cluster with tms's authorizer (docs/security.md); an API key
			// (central.temporal.api_key) is sent instead when one is configured.
			var token func(context.Context) (string, error)
			if cfg.Central.Temporal.APIKey == "" {
				token = (&auth.WorkerTokens{Key: key, Name: "central"}).Token
			}
			tc, err := workers.DialToken(ctx, cfg.Central.Temporal, log, token)
			if err != nil {
				return err
			}
			defer tc.Close()
			srv, err := server.StartCentral(ctx, server.CentralOptions{DataDir: cfg.Central.DataDir, Database: cfg.Central.Database.Value(),
				DatabaseConnectTimeout: cfg.Central.DatabaseConnectTimeout, Relay: relay, Key: key, Client: tc,
				Namespace: cfg.Central.Temporal.Namespace, Log: log, Listen: cfg.Central.Listen.String(), TLS: cfg.Central.TLS,
				Routes: []func(*http.ServeMux, *server.Central){func(mux *http.ServeMux, c *server.Central) {
					centralapi.New(centralapi.Options{Users: c.Catalog, Key: key, Log: log}).Mount(mux)
				}}})
			if err != nil {
				return err
			}
			defer srv.Stop()
			if !cfg.Central.TLS.Enabled() && !cfg.Central.Listen.Addr().IsLoopback() {
				log.Warn("central's HTTP service is plain http off loopback: tms login refuses to send passwords to it; set central.tls.cert_file and key_file", "listen", cfg.Central.Listen.String())
			}
			log.Info("central is running", "url", srv.URL(), "health", srv.URL()+"/healthz", "metrics", srv.URL()+"/metrics")
			return srv.Wait(ctx)
		},
	}
	f := c.Flags()
	f.String("central-temporal-address", "", "Temporal frontend host:port (central.temporal.address)")
	f.String("central-temporal-namespace", "", "Temporal namespace (central.temporal.namespace)")
	f.Bool("central-temporal-insecure", false, "allow a plaintext Temporal connection without TLS or API key, on a network you trust (central.temporal.insecure)")
	f.String("central-store", "", "relay store: a directory or s3://bucket/prefix (central.store)")
	f.String("central-data-dir", "", "directory of the catalog database (central.data_dir)")
	f.String("central-database", "", "catalog database: a SQLite file, or postgres://user@host/db (central.database; default data_dir/catalog.db); put a password in the file or TMS_CENTRAL_DATABASE, not here")
	f.String("central-listen", "", "HTTP address of health checks, /metrics, login and users, ip:port (central.listen)")
	f.String("central-signing-key-file", "", "central's ed25519 key file (central.signing_key_file)")
	c.AddCommand(a.centralKeyCommands()...)
	return c
}

// regionCommand runs a region's server for production, against an external Temporal.
func (a *App) regionCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "region",
		Short: "Run a regional server: terminals, images, capture and deploy (Temporal task queue region.<id>)",
		Long: `Run a regional server until it is stopped (SIGINT or SIGTERM): its HTTP service for agents and
peers, and its Temporal worker. It records itself in central's catalog when it starts.

It needs region.id, region.temporal, region.data_dir, region.listen and region.central_public_key
(central's public key, which checks transfer grants and the signatures of the versions the region
deploys: tms central pubkey prints it), and region.endpoint when region.listen is a wildcard address; region.store defaults to a
directory store in region.data_dir, region.relay (central.store as this region reaches it) enables
relayed transfers. region.boot.* turns on the boot service (DHCP, TFTP, iPXE scripts, Wake-on-LAN)
on the terminals' interface; it needs root (ports 67, 69 and 4011). region.tls.cert_file and
region.tls.key_file make the HTTP service HTTPS; region.http.* caps its connections.

It refuses a Temporal connection with neither TLS (region.temporal.tls.*) nor an API key
(region.temporal.api_key) unless region.temporal.insecure is set (--region-temporal-insecure).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, log, err := a.serverConfig(cmd.Flags(), config.RoleRegion)
			if err != nil {
				return err
			}
			rc := cfg.Region
			centralKey, err := signing.LoadPublicKey(rc.CentralPublicKey)
			if err != nil {
				return fmt.Errorf("region.central_public_key: %w", err)
			}
			var st, relay *store.Store
			if rc.Store != "" {
				if st, err = a.storeAt(ctx, rc.Store, cfg.Store.S3, true); err != nil {
					return fmt.Errorf("region.store: %w", err)
				}
			}
			if rc.Relay != "" {
				if relay, err = a.storeAt(ctx, rc.Relay, cfg.Store.S3, false); err != nil {
					return fmt.Errorf("region.relay: %w", err)
				}
			}
			tc, err := workers.Dial(ctx, rc.Temporal, log)
			if err != nil {
				return err
			}
			defer tc.Close()
			endpoint := ""
			if rc.Endpoint != nil {
				endpoint = rc.Endpoint.String()
			}
			metricsListen := ""
			if rc.MetricsListen.IsValid() {
				metricsListen = rc.MetricsListen.String()
			}
			srv, err := server.StartRegion(ctx, server.RegionOptions{ID: rc.ID, DataDir: rc.DataDir, Database: rc.Database.Value(),
				DatabaseConnectTimeout: rc.DatabaseConnectTimeout, Store: st, Relay: relay,
				Listen: rc.Listen.String(), Endpoint: endpoint, HTTP: rc.HTTP, TLS: rc.TLS, Labels: rc.Labels, Timezone: rc.Zone(), CentralKey: centralKey, Client: tc, Log: log, Boot: rc.Boot,
				Version: Version, ReportInterval: rc.ReportInterval, StoreHighWater: rc.StoreHighWater,
				StoreLowWater: rc.StoreLowWater, StoreCapacity: rc.StoreCapacityBytes(),
				MetricsListen: metricsListen, Unicast: rc.Unicast, WANRate: rc.WANRateBytes(), WANRateWindows: rc.WANWindows(),
				ServerID: rc.ServerID, ServerLabels: rc.ServerLabels, Heartbeat: rc.Heartbeat})
			if err != nil {
				return err
			}
			defer func() {
				sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				srv.Stop(sctx)
			}()
			return srv.Wait(ctx)
		},
	}
	f := c.Flags()
	f.String("region-id", "", "region id, like room-12 (region.id)")
	f.String("region-temporal-address", "", "Temporal frontend host:port (region.temporal.address)")
	f.String("region-temporal-namespace", "", "Temporal namespace (region.temporal.namespace)")
	f.Bool("region-temporal-insecure", false, "allow a plaintext Temporal connection without TLS or API key, on a network you trust (region.temporal.insecure)")
	f.String("region-data-dir", "", "directory of the region's database and default store (region.data_dir)")
	f.String("region-database", "", "inventory database: a SQLite file, or postgres://user@host/db shared by the region's servers (region.database; default data_dir/inventory.db); put a password in the file or TMS_REGION_DATABASE, not here")
	f.String("region-store", "", "image store: a directory or s3://bucket/prefix (region.store)")
	f.String("region-relay", "", "central's store as this region reaches it (region.relay)")
	f.String("region-listen", "", "HTTP address for agents and peers, ip:port (region.listen)")
	f.String("region-endpoint", "", "URL terminals and peers reach this server at (region.endpoint)")
	f.String("region-metrics-listen", "", "serve GET /metrics on this ip:port instead of region.listen (region.metrics_listen)")
	f.String("region-central-public-key", "", "central's public key, tms-ed25519:… or a file holding it (region.central_public_key)")
	f.String("region-labels", "", "topology labels, like site=north,floor=2 (region.labels)")
	f.String("region-server-id", "", "this server among the region's servers; default the host name (region.server_id)")
	f.String("region-server-labels", "", "this server's place in the region, like room=a,rack=2 (region.server_labels)")
	return c
}

// serverConfig loads the configuration for a server role and makes its logger.
func (a *App) serverConfig(flags *pflag.FlagSet, role config.Role) (*config.Config, *slog.Logger, error) {
	cfg, err := config.Load(config.LoadOptions{File: a.configFile, Flags: flags, Env: a.Env, Role: role})
	if err != nil {
		return nil, nil, err
	}
	return cfg, slog.New(cfg.Log.NewHandler(a.Stderr)), nil
}
