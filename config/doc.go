// Package config loads the configuration of the tms programs (central server, regional server,
// terminal agent and command-line tools) into one typed Config.
//
// Load reads, each source overriding the ones before it:
//
//  1. Defaults();
//  2. for the store.s3 credentials and region only, the AWS SDK's environment variables
//     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION (or
//     AWS_DEFAULT_REGION);
//  3. a YAML (.yaml, .yml) or TOML (.toml) file;
//  4. environment variables: TMS_ followed by the key in upper case with '.' turned into '_';
//  5. command-line flags that were set: the key with '.' and '_' turned into '-'.
//
// An environment variable set to the empty string counts as unset, and a flag counts only if it
// was given on the command line (its declared default is not used). Load reads its sources
// through its own viper instance and decodes them once; no other package sees viper. A key in
// the file that is not one of the keys below is an error, as is any value Validate rejects;
// errors name the key (*FieldError) or the file (*FileError) and never show a secret.
//
// # Keys
//
//	key                                default            meaning
//	log.level                          info               debug, info, warn or error
//	log.format                         text               text or json
//	store.s3.endpoint                                     host:port, http://host:port or https://host:port
//	store.s3.access_key                                   secret
//	store.s3.secret_key                                   secret
//	store.s3.session_token                                secret
//	store.s3.region
//	store.s3.insecure                  false              plain http; set by the endpoint's scheme if it has one
//	central.temporal.address           localhost:7233     Temporal frontend, host:port
//	central.temporal.namespace         default
//	central.temporal.tls.ca_file
//	central.temporal.tls.cert_file
//	central.temporal.tls.key_file
//	central.temporal.tls.server_name
//	central.temporal.api_key                              secret
//	central.temporal.insecure          false              allow plaintext without TLS or API key (the server refuses it otherwise)
//	central.store                                         master image store: directory or s3://bucket/prefix
//	central.listen                     [::]:8080          HTTP service (health checks, /metrics, login, users), ip:port
//	central.tls.cert_file                                 PEM certificate (chain): the HTTP service becomes HTTPS
//	central.tls.key_file                                  its PEM private key
//	cli.central_url                    http://127.0.0.1:8300  central's HTTP service, for tms login and tms user
//	central.data_dir                   /var/lib/tms/central catalog database
//	central.database                                      catalog: empty for data_dir/catalog.db (SQLite), or postgres://user:password@host/db
//	central.database_connect_timeout   1m                 how long starting retries an unreachable PostgreSQL (1s to 1h)
//	central.signing_key_file                              central's ed25519 key (tms central init); signs versions and grants
//	region.id                                             like room-12: [a-z0-9][a-z0-9-]{0,62}
//	region.temporal.*                                     as central.temporal.*
//	region.store                                          image store: directory or s3://bucket/prefix
//	region.data_dir                                       local state
//	region.database                                       inventory: empty for data_dir/inventory.db (SQLite), or postgres://… shared by the region's servers
//	region.database_connect_timeout    1m                 how long starting retries an unreachable PostgreSQL (1s to 1h)
//	region.listen                      [::]:8081          HTTP service for agents and peers, ip:port
//	region.endpoint                                       URL terminals and peers reach it at
//	region.metrics_listen                                 ip:port serving GET /metrics apart; empty: on region.listen
//	region.http.max_conns_per_ip       64                 connections one client address may keep open; 0: no cap
//	region.http.max_conns              2048               connections open in all; 0: no cap
//	region.tls.cert_file                                  PEM certificate (chain): the HTTP service becomes HTTPS
//	region.tls.key_file                                   its PEM private key
//	region.relay                                          central.store as this region reaches it
//	region.central_public_key                             central's public key, tms-ed25519:… or a file holding it
//	region.labels                                         topology, like site=north,floor=2
//	region.server_id                   host name          this server among the region's servers, like srv-a (host-name form)
//	region.server_labels                                  this server's place in the region, like room=a,rack=2
//	region.heartbeat                   5s                 how often the server records it is alive (100ms to 1m; stale after 3 missed)
//	region.timezone                    local zone         IANA zone its schedules are written in, like Europe/Berlin
//	region.report_interval             15s                how often the region reports its status to central (1s to 10m)
//	region.store_high_water            0.9                the store's high-water mark, a fraction of its capacity (0.5 to 0.99)
//	region.store_low_water             0.8                what eviction brings a store above its high-water mark down to (0.3 to 0.95, below high water)
//	region.store_capacity              filesystem         the most the store may hold, like 2GiB (0: its filesystem's size; the smaller wins)
//	region.wan_rate                    off                cap of all the region's WAN transfers, both ways, like 20MB/s or 160Mbit/s
//	region.wan_rate_windows            none               caps by time of day, like 08:00-16:00=5MB/s,16:00-08:00=50MB/s
//	region.unicast                     false              turn the swarm off: every terminal fetches every chunk from the region
//	region.boot.enabled                false              run the boot service (DHCP, TFTP, iPXE scripts, Wake-on-LAN)
//	region.boot.interface                                 the terminals' network interface (required if enabled)
//	region.boot.address                                   this server's IPv4 address on it (required if enabled)
//	region.boot.dhcp                   proxy              proxy (beside the school's DHCP), full (isolated lab) or off
//	region.boot.pool                                      full mode: range handed out, like 10.0.5.100-10.0.5.199
//	region.boot.subnet                                    full mode: like 10.0.5.0/24; any mode: power on refuses terminals last seen outside it
//	region.boot.router                                    full mode: default gateway
//	region.boot.dns                                       full mode: DNS servers, comma-separated
//	region.boot.lease_time             1h                 full mode: lease time
//	region.boot.dhcp_allow                                full mode: MACs leased to besides enrolled terminals: aa:bb:cc:dd:ee:ff, prefixes like 52:54:00:*, or * for any
//	region.boot.dhcp_unknown_per_mac   12                 DHCP requests a minute answered per MAC that is not admitted
//	region.boot.dhcp_unknown_total     20                 DHCP requests a second answered from all MACs not admitted together
//	region.boot.tftp_dir               /usr/lib/ipxe      iPXE binaries (Debian's ipxe package)
//	region.boot.dir                                       in-memory OS (tms bootenv build --out); default data_dir/bootenv
//	region.boot.kernel_args                               added to the in-memory OS's kernel command line
//	region.boot.http_listen            address:8380       with region.tls: iPXE's plain-HTTP script and boot files
//	region.boot.claim_quiet            1m                 a network boot stands this long before its task's result is taken
//	region.boot.wake_timeout           3m                 power on waits this long for a woken terminal to be seen
//	agent.region_url                                      http(s) URL of the region's API
//	agent.disk                                            block device to write, like /dev/sda
//	agent.state_dir                    /var/lib/tms/agent local state
//
// So store.s3.access_key is TMS_STORE_S3_ACCESS_KEY or --store-s3-access-key, and region.data_dir
// is TMS_REGION_DATA_DIR or --region-data-dir. In the environment and in a string flag,
// region.labels is written site=north,floor=2 (a pflag StringToString flag works too) and
// region.boot.dhcp_allow 52:54:00:*,aa:bb:cc:dd:ee:ff. Prefer the file or the environment for
// secrets: other users of the machine can read command lines.
//
// Role says which keys must be set: see Config.Validate and the Role constants.
//
// # Example
//
// A file for a regional server:
//
//	log:
//	  level: debug
//	store:
//	  s3:
//	    endpoint: http://minio.school.lan:9000
//	region:
//	  id: room-12
//	  data_dir: /var/lib/tms/region
//	  endpoint: http://room-12.school.lan:8081
//	  central_public_key: /etc/tms/central.pub
//	  temporal:
//	    address: temporal.school.lan:7233
//	    tls:
//	      ca_file: /etc/tms/temporal-ca.pem
//	  labels:
//	    site: north
//
// and its program:
//
//	fs := pflag.NewFlagSet("tms-region", pflag.ExitOnError)
//	file := fs.String("config", "/etc/tms/region.yaml", "configuration file")
//	fs.String("log-level", "", "debug, info, warn or error (log.level)")
//	fs.String("region-id", "", "region id (region.id)")
//	fs.Parse(os.Args[1:])
//
//	cfg, err := config.Load(config.LoadOptions{File: *file, Flags: fs, Role: config.RoleRegion})
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err) // one line per problem
//		os.Exit(2)
//	}
//	log := slog.New(cfg.Log.NewHandler(os.Stderr))
//	log.Info("starting", "region", cfg.Region.ID, "s3", cfg.Store.S3) // credentials redacted
package config
