package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"tms/settings"
)

// Config is the whole configuration of every tms program. Each program reads the sections it
// needs; Role decides which of them must be filled in (see Config.Validate).
//
// The mapstructure tags are the configuration keys; see the package documentation for the
// environment variables and flags they map to.
type Config struct {
	Log     Log     `mapstructure:"log"`
	Store   Store   `mapstructure:"store"`
	Central Central `mapstructure:"central"`
	Region  Region  `mapstructure:"region"`
	Agent   Agent   `mapstructure:"agent"`
	CLI     CLI     `mapstructure:"cli"`
}

// CLI configures the tms command line.
type CLI struct {
	// CentralURL is central's HTTP service, where tms login and tms user go (default
	// http://127.0.0.1:8300, the one of tms dev). The CLI sends passwords and tokens over
	// plain http only to a loopback address.
	CentralURL *url.URL `mapstructure:"central_url"`
}

// Log configures the process logger.
type Log struct {
	// Level is "debug", "info", "warn" or "error".
	Level string `mapstructure:"level"`
	// Format is "text" or "json".
	Format string `mapstructure:"format"`
}

// SlogLevel returns Level as a slog.Level; an unknown level (which Validate rejects) is Info.
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// NewHandler returns a slog handler writing to w in Format at Level.
func (l Log) NewHandler(w io.Writer) slog.Handler {
	opts := &slog.HandlerOptions{Level: l.SlogLevel()}
	if l.Format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// Store holds the settings shared by every image store that lives in S3. A store location
// (Central.Store, Region.Store) is either a local directory or s3://bucket/prefix; the s3 form
// uses these settings.
type Store struct {
	S3 S3 `mapstructure:"s3"`
}

// S3 is how to reach an S3-compatible object store (AWS, MinIO, Ceph...).
//
// Load accepts the endpoint as host:port, http://host:port or https://host:port; it stores
// host:port in Endpoint and sets Insecure from the scheme (http means Insecure). An empty
// Endpoint means the S3 client's default (AWS). The credentials fall back to the standard
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION (then
// AWS_DEFAULT_REGION) environment variables.
//
// String, GoString and MarshalJSON redact the credentials.
type S3 struct {
	// Endpoint is host or host:port, without a scheme.
	Endpoint     string `mapstructure:"endpoint"`
	AccessKey    string `mapstructure:"access_key"`
	SecretKey    string `mapstructure:"secret_key"`
	SessionToken string `mapstructure:"session_token"`
	Region       string `mapstructure:"region"`
	// Insecure means plain http instead of https.
	Insecure bool `mapstructure:"insecure"`
}

// String describes s without its credentials.
func (s S3) String() string { return fmt.Sprintf("%+v", plainS3(s.redacted())) }

// GoString is String for %#v.
func (s S3) GoString() string {
	return "config.S3" + strings.TrimPrefix(fmt.Sprintf("%#v", plainS3(s.redacted())), "config.plainS3")
}

// MarshalJSON encodes s without its credentials (slog's JSON handler uses it).
func (s S3) MarshalJSON() ([]byte, error) { return json.Marshal(plainS3(s.redacted())) }

func (s S3) redacted() S3 {
	s.AccessKey, s.SecretKey, s.SessionToken = redact(s.AccessKey), redact(s.SecretKey), redact(s.SessionToken)
	return s
}

// plainS3 is S3 without its methods, for printing a redacted copy.
type plainS3 S3

// Temporal is how to reach the Temporal frontend.
//
// String, GoString and MarshalJSON redact APIKey.
type Temporal struct {
	// Address is host:port of the frontend.
	Address string `mapstructure:"address"`
	// Namespace defaults to "default".
	Namespace string `mapstructure:"namespace"`
	TLS       TLS    `mapstructure:"tls"`
	// APIKey is sent as a bearer token (Temporal Cloud); empty means none.
	APIKey string `mapstructure:"api_key"`
	// Insecure allows a plaintext connection without an API key: anyone on the path can read
	// and forge the workflows that move images and wipe disks. The servers (RoleCentral,
	// RoleRegion) refuse such a connection unless it is set; it changes nothing when TLS or an
	// API key is configured.
	Insecure bool `mapstructure:"insecure"`
}

// Plaintext tells whether t describes a connection with neither TLS nor an API key (an API
// key brings TLS with it: see workers.ClientOptions).
func (t Temporal) Plaintext() bool { return t.TLS == (TLS{}) && t.APIKey == "" }

// String describes t without its API key.
func (t Temporal) String() string { return fmt.Sprintf("%+v", plainTemporal(t.redacted())) }

// GoString is String for %#v.
func (t Temporal) GoString() string {
	return "config.Temporal" + strings.TrimPrefix(fmt.Sprintf("%#v", plainTemporal(t.redacted())), "config.plainTemporal")
}

// MarshalJSON encodes t without its API key (slog's JSON handler uses it).
func (t Temporal) MarshalJSON() ([]byte, error) { return json.Marshal(plainTemporal(t.redacted())) }

func (t Temporal) redacted() Temporal {
	t.APIKey = redact(t.APIKey)
	return t
}

// plainTemporal is Temporal without its methods, for printing a redacted copy.
type plainTemporal Temporal

// TLS is the client side of a TLS connection. All fields empty means the client's defaults;
// CertFile and KeyFile go together (mutual TLS).
type TLS struct {
	CAFile     string `mapstructure:"ca_file"`
	CertFile   string `mapstructure:"cert_file"`
	KeyFile    string `mapstructure:"key_file"`
	ServerName string `mapstructure:"server_name"`
}

// Central configures the central server: the master image store and the Temporal workers that
// distribute images to the regions.
type Central struct {
	Temporal Temporal `mapstructure:"temporal"`
	// Store is the master image store: a directory or s3://bucket/prefix. Regions relay images
	// through it when they cannot reach each other.
	Store string `mapstructure:"store"`
	// Listen is the address of central's HTTP service (health checks, Prometheus metrics, login,
	// users).
	Listen netip.AddrPort `mapstructure:"listen"`
	// TLS, when set, makes central's HTTP service HTTPS: required for logins from other
	// machines (the CLI sends a password over plain http only to a loopback address).
	TLS ServerTLS `mapstructure:"tls"`
	// DataDir holds central's catalog database.
	DataDir string `mapstructure:"data_dir"`
	// Database is the catalog database: empty for DataDir/catalog.db (SQLite), or a
	// postgres:// URL.
	Database Database `mapstructure:"database"`
	// DatabaseConnectTimeout is how long starting retries an unreachable PostgreSQL.
	DatabaseConnectTimeout time.Duration `mapstructure:"database_connect_timeout"`
	// SigningKeyFile holds central's ed25519 private key (tms central init creates it): central
	// signs every image version it registers and every transfer grant with it. Only central
	// has it; regions and agents get the public key.
	SigningKeyFile string `mapstructure:"signing_key_file"`
}

// Region configures a regional server (one per classroom): its local image cache and the
// services the terminals boot from.
type Region struct {
	// ID names the region in workflows and task queues; see Config.Validate for its form.
	ID       string   `mapstructure:"id"`
	Temporal Temporal `mapstructure:"temporal"`
	// Store is the region's image store, a directory or s3://bucket/prefix; empty means the
	// program's default (under DataDir).
	Store string `mapstructure:"store"`
	// DataDir holds the region's local state.
	DataDir string `mapstructure:"data_dir"`
	// Database is the region's inventory: empty for DataDir/inventory.db (SQLite), or a
	// postgres:// URL, which the servers of one region share.
	Database Database `mapstructure:"database"`
	// DatabaseConnectTimeout is how long starting retries an unreachable PostgreSQL.
	DatabaseConnectTimeout time.Duration `mapstructure:"database_connect_timeout"`
	// Listen is the address of the region's HTTP service: the agent API and the data endpoint
	// peers pull images from.
	Listen netip.AddrPort `mapstructure:"listen"`
	// Endpoint is the URL terminals and peer regions reach the HTTP service at; empty means
	// http:// (https:// with TLS) and the listen address (which must then not be unspecified).
	Endpoint *url.URL `mapstructure:"endpoint"`
	// MetricsListen, if set, is where the region serves GET /metrics (Prometheus), plain HTTP,
	// instead of on the HTTP service (region.listen): for admins who firewall it apart.
	MetricsListen netip.AddrPort `mapstructure:"metrics_listen"`
	// HTTP bounds the connections of the HTTP service.
	HTTP RegionHTTP `mapstructure:"http"`
	// TLS, when set, makes the HTTP service HTTPS.
	TLS ServerTLS `mapstructure:"tls"`
	// Relay is central's store (central.store) as this region reaches it, for relayed
	// transfers; empty means the region cannot relay.
	Relay string `mapstructure:"relay"`
	// CentralPublicKey is central's public key, in its text form ("tms-ed25519:…", as tms
	// central pubkey prints it) or the name of a file holding that: the region checks transfer
	// grants and the signatures of the versions it deploys with it.
	CentralPublicKey string `mapstructure:"central_public_key"`
	// Labels place the region in the school's topology, like site=north or floor=2. Keys are
	// lower case (file keys are folded to lower case when read).
	Labels map[string]string `mapstructure:"labels"`
	// ServerID names this server among the region's servers (a region may run several `tms
	// region` processes with the same region id on one shared database): like a host name,
	// lowercase letters, digits, '-' and '.'. Empty means the host's name (ServerIDOrHost).
	ServerID string `mapstructure:"server_id"`
	// ServerLabels place this server in the region, like room=a or rack=2: the terminals of
	// groups with matching labels boot from it first (docs/boot.md). Written as region.labels.
	ServerLabels map[string]string `mapstructure:"server_labels"`
	// Heartbeat is how often the server records in the region's database that it is alive; it
	// counts as stale after three missed heartbeats.
	Heartbeat time.Duration `mapstructure:"heartbeat"`
	// Timezone is the IANA name of the zone the region's classes keep time in, like
	// Europe/Berlin: schedules for the region (tms schedule create --at 07:00) are written in
	// it. Empty means the server's local zone (LocalZone). The region reports it to central.
	Timezone string `mapstructure:"timezone"`
	// ReportInterval is how often the region reports its status to central; central (tms
	// status) calls it offline after three missed reports.
	ReportInterval time.Duration `mapstructure:"report_interval"`
	// StoreHighWater is the region store's high-water mark: the fraction of its capacity
	// (0.5 to 0.99) above which the store counts as too full.
	StoreHighWater float64 `mapstructure:"store_high_water"`
	// StoreLowWater is the fraction of its capacity (0.3 to 0.95, below StoreHighWater) that
	// eviction brings a store above its high-water mark down to; 0: the default, 0.8.
	StoreLowWater float64 `mapstructure:"store_low_water"`
	// StoreCapacity is the most the region's store may hold, a size like "2GiB" or "500MB";
	// empty or "0": its filesystem's size. The effective capacity is the smaller of the two
	// (StoreCapacityBytes).
	StoreCapacity string `mapstructure:"store_capacity"`
	// WANRate caps the bytes a second of all the region's WAN transfers together, both ways:
	// peer pulls, what its data endpoint serves to other regions, relay uploads and downloads
	// (not its terminals' traffic). Written like 20MB/s or 160Mbit/s (settings.ParseRate);
	// empty or off: no cap. WANRateBytes reads it.
	WANRate string `mapstructure:"wan_rate"`
	// WANRateWindows are times of day, in the region's zone, with caps of their own that
	// replace WANRate while they last, like "08:00-16:00=5MB/s,16:00-08:00=50MB/s"
	// (settings.ParseRateWindows); empty or none: WANRate all day.
	WANRateWindows string `mapstructure:"wan_rate_windows"`
	// Boot is the region's boot service: how its terminals boot from the network.
	Boot Boot `mapstructure:"boot"`
	// Unicast turns the swarm off: every terminal of a deploy or update fetches every chunk
	// from the region, instead of from the other terminals writing the same version
	// (docs/swarm.md). A single terminal always fetches from the region.
	Unicast bool `mapstructure:"unicast"`
}

// ServerIDOrHost is region.server_id, or the host's name (lower-cased, its domain left out)
// when that is empty. A host name that is not a valid server id is an error naming the key.
func (r Region) ServerIDOrHost() (string, error) {
	if r.ServerID != "" {
		return r.ServerID, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("region.server_id: empty, and the host's name is unknown (%w): set it", err)
	}
	h, _, _ = strings.Cut(strings.ToLower(h), ".")
	if !serverIDRE.MatchString(h) {
		return "", fmt.Errorf("region.server_id: empty, and the host's name %q is not a valid server id: set it", h)
	}
	return h, nil
}

// RegionHTTP bounds a region's HTTP service, which every host of the classroom network can reach.
// A connection over a cap is closed as soon as it is accepted. A terminal's agent keeps one
// connection per chunk it moves at once (2 per CPU, at least 4) plus a command poll; a peer
// region pulling an image, 16 or 2 per CPU.
type RegionHTTP struct {
	// MaxConnsPerIP is the most connections one client address may have open; 0 means no cap.
	MaxConnsPerIP int `mapstructure:"max_conns_per_ip"`
	// MaxConns is the most connections open in all; 0 means no cap.
	MaxConns int `mapstructure:"max_conns"`
}

// ServerTLS is the server side of TLS: PEM files of a certificate (chain) and its private key.
// Both empty means no TLS.
type ServerTLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Boot configures a region's boot service: DHCP, TFTP, iPXE scripts and Wake-on-LAN on the
// terminals' network segment. Addresses are written as text and checked by Validate; Settings
// parses them.
type Boot struct {
	// Enabled turns the boot service on.
	Enabled bool `mapstructure:"enabled"`
	// Interface is the terminals' network interface; DHCP, TFTP and Wake-on-LAN use it only.
	Interface string `mapstructure:"interface"`
	// Address is this server's IPv4 address on that interface (the TFTP next-server).
	Address string `mapstructure:"address"`
	// DHCP is "proxy" (beside the school's DHCP server, the default), "full" (an isolated lab:
	// tms hands out addresses) or "off" (another DHCP server points PCs at tms).
	DHCP string `mapstructure:"dhcp"`
	// Full mode: the addresses handed out ("10.0.5.100-10.0.5.199"), the subnet
	// ("10.0.5.0/24"), the router and DNS servers (comma-separated) and the lease time. In
	// any mode the subnet, if set, is the terminals' boot segment: a power-on of a terminal
	// last seen outside it is refused, as Wake-on-LAN does not cross routers.
	Pool      string        `mapstructure:"pool"`
	Subnet    string        `mapstructure:"subnet"`
	Router    string        `mapstructure:"router"`
	DNS       string        `mapstructure:"dns"`
	LeaseTime time.Duration `mapstructure:"lease_time"`
	// DHCPAllow: full mode leases to the enrolled terminals and to these MACs
	// ("aa:bb:cc:dd:ee:ff") and MAC prefixes ("52:54:00:*"); "*" leases to any MAC.
	// In the environment or a flag, entries are comma-separated.
	DHCPAllow []string `mapstructure:"dhcp_allow"`
	// DHCPUnknownPerMAC and DHCPUnknownTotal limit the DHCP requests of MACs that are
	// not admitted (neither enrolled nor in DHCPAllow): per MAC a minute, and all of
	// them together a second. What exceeds them gets no answer.
	DHCPUnknownPerMAC int `mapstructure:"dhcp_unknown_per_mac"`
	DHCPUnknownTotal  int `mapstructure:"dhcp_unknown_total"`
	// TFTPDir holds the iPXE binaries (Debian's ipxe package puts them in /usr/lib/ipxe).
	TFTPDir string `mapstructure:"tftp_dir"`
	// Dir holds the in-memory OS, vmlinuz and initrd (tms bootenv build --out); empty means
	// the bootenv directory in region.data_dir.
	Dir string `mapstructure:"dir"`
	// KernelArgs are added to the in-memory OS's kernel command line (e.g. console=ttyS0).
	KernelArgs string `mapstructure:"kernel_args"`
	// HTTPListen is where a region with region.tls serves iPXE its script and the in-memory OS
	// over plain HTTP (iPXE cannot check tms's CA); the in-memory OS's agent then speaks HTTPS.
	// Empty means port 8380 on region.boot.address.
	HTTPListen string `mapstructure:"http_listen"`
	// ClaimQuiet is how long a terminal's network boot into a task must stand unchallenged
	// before the region takes the task's result, so that a second machine claiming the same
	// boot (a forged MAC) fails the task instead of finishing it first.
	ClaimQuiet time.Duration `mapstructure:"claim_quiet"`
	// WakeTimeout is how long `tms power on` waits for a terminal sent Wake-on-LAN to be seen
	// (a DHCP request or its agent) before it says the terminal did not answer (0: 3 minutes).
	WakeTimeout time.Duration `mapstructure:"wake_timeout"`
}

// BootSettings are Boot's addresses, parsed.
type BootSettings struct {
	Address   netip.Addr
	PoolStart netip.Addr
	PoolEnd   netip.Addr
	Subnet    netip.Prefix
	Router    netip.Addr
	DNS       []netip.Addr
	// DHCPAllow are the MACs (6 bytes) and MAC prefixes (1 to 5 bytes) of
	// region.boot.dhcp_allow; DHCPAllowAll is set by its entry "*".
	DHCPAllow    []net.HardwareAddr
	DHCPAllowAll bool
}

// Settings parses b's addresses; each error names its key.
func (b Boot) Settings() (BootSettings, error) {
	var s BootSettings
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("region.boot.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	ipv4 := func(key, text string) netip.Addr {
		a, err := netip.ParseAddr(strings.TrimSpace(text))
		if err != nil || !a.Is4() {
			bad(key, "%q is not an IPv4 address", text)
		}
		return a
	}
	if b.Address != "" {
		s.Address = ipv4("address", b.Address)
	}
	if b.Pool != "" {
		lo, hi, ok := strings.Cut(b.Pool, "-")
		if !ok {
			bad("pool", "%q is not a range like 10.0.5.100-10.0.5.199", b.Pool)
		} else {
			s.PoolStart, s.PoolEnd = ipv4("pool", lo), ipv4("pool", hi)
			if s.PoolStart.IsValid() && s.PoolEnd.IsValid() && s.PoolEnd.Less(s.PoolStart) {
				bad("pool", "%q ends before it starts", b.Pool)
			}
		}
	}
	if b.Subnet != "" {
		p, err := netip.ParsePrefix(strings.TrimSpace(b.Subnet))
		if err != nil || !p.Addr().Is4() {
			bad("subnet", "%q is not an IPv4 subnet like 10.0.5.0/24", b.Subnet)
		}
		s.Subnet = p.Masked()
	}
	if b.Router != "" {
		s.Router = ipv4("router", b.Router)
	}
	if b.DNS != "" {
		for _, d := range strings.Split(b.DNS, ",") {
			s.DNS = append(s.DNS, ipv4("dns", d))
		}
	}
	for _, e := range b.DHCPAllow {
		prefix, all, err := ParseMACPattern(e)
		switch {
		case err != nil:
			bad("dhcp_allow", "%v", err)
		case all:
			s.DHCPAllowAll = true
		default:
			s.DHCPAllow = append(s.DHCPAllow, prefix)
		}
	}
	return s, errors.Join(errs...)
}

// ParseMACPattern reads an entry of region.boot.dhcp_allow: a MAC
// ("aa:bb:cc:dd:ee:ff"), a prefix of 1 to 5 bytes followed by ":*"
// ("52:54:00:*"), or "*" for every MAC (all true). Bytes are two hex digits,
// separated by ':' or '-'.
func ParseMACPattern(s string) (prefix net.HardwareAddr, all bool, err error) {
	bad := fmt.Errorf("%q is not a MAC (aa:bb:cc:dd:ee:ff), a MAC prefix (52:54:00:*) or *", s)
	t := strings.TrimSpace(s)
	if t == "*" {
		return nil, true, nil
	}
	if len(t) > len("aa:bb:cc:dd:ee:ff") {
		return nil, false, bad
	}
	isPrefix := false
	if rest, ok := strings.CutSuffix(t, "*"); ok {
		if len(rest) < 3 || (rest[len(rest)-1] != ':' && rest[len(rest)-1] != '-') {
			return nil, false, bad
		}
		t, isPrefix = rest[:len(rest)-1], true
	}
	sep := ":"
	if strings.Contains(t, "-") {
		sep = "-"
	}
	parts := strings.Split(t, sep)
	if (isPrefix && len(parts) > 5) || (!isPrefix && len(parts) != 6) {
		return nil, false, bad
	}
	for _, p := range parts {
		if len(p) != 2 {
			return nil, false, bad
		}
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return nil, false, bad
		}
		prefix = append(prefix, byte(v))
	}
	return prefix, false, nil
}

// Agent configures the terminal agent.
type Agent struct {
	// RegionURL is the base http or https URL of the region's API.
	RegionURL *url.URL `mapstructure:"region_url"`
	// Disk is the block device images are written to (an absolute path such as /dev/sda or
	// /dev/disk/by-id/...); empty means the agent chooses.
	Disk string `mapstructure:"disk"`
	// StateDir holds the agent's local state.
	StateDir string `mapstructure:"state_dir"`
}

// The defaults of region.http: an agent on a 16-thread terminal moves 32 chunks at once, a
// peer region 16 or more; 64 leaves room for both, and a classroom of 40 terminals that all
// deploy at once fits twice in 2048.
const (
	DefaultMaxConnsPerIP = 64
	DefaultMaxConns      = 2048
)

// Defaults returns the configuration used for every key that no file, environment variable or
// flag sets. Each call returns a new value.
func Defaults() *Config {
	temporal := Temporal{Address: net.JoinHostPort("localhost", "7233"), Namespace: "default"}
	return &Config{
		Log: Log{Level: "info", Format: "text"},
		Central: Central{Temporal: temporal, Listen: netip.AddrPortFrom(netip.IPv6Unspecified(), 8080), DataDir: "/var/lib/tms/central",
			DatabaseConnectTimeout: time.Minute},
		Region: Region{Temporal: temporal, Listen: netip.AddrPortFrom(netip.IPv6Unspecified(), 8081), ReportInterval: 15 * time.Second, StoreHighWater: 0.9,
			Heartbeat: 5 * time.Second, DatabaseConnectTimeout: time.Minute,
			HTTP: RegionHTTP{MaxConnsPerIP: DefaultMaxConnsPerIP, MaxConns: DefaultMaxConns},
			Boot: Boot{DHCP: "proxy", LeaseTime: time.Hour, TFTPDir: "/usr/lib/ipxe",
				DHCPUnknownPerMAC: 12, DHCPUnknownTotal: 20, ClaimQuiet: time.Minute, WakeTimeout: 3 * time.Minute}},
		Agent: Agent{StateDir: "/var/lib/tms/agent"},
	}
}

// redact stands in for a secret in anything printed.
func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return "[redacted]"
}

// StoreCapacityBytes is region.store_capacity in bytes (0: not set). The configuration was
// validated when loaded; a value that does not parse counts as not set.
func (r Region) StoreCapacityBytes() int64 {
	n, err := settings.ParseSize(r.StoreCapacity)
	if err != nil {
		return 0
	}
	return n
}

// WANRateBytes is WANRate in bytes a second (0: no cap). The configuration was validated:
// a value that does not parse is no cap.
func (r Region) WANRateBytes() int64 {
	if r.WANRate == "" {
		return 0
	}
	n, err := settings.ParseRate(r.WANRate)
	if err != nil {
		return 0
	}
	return n
}

// WANWindows is WANRateWindows in canonical form (settings.FormatRateWindows); empty if none
// or if it does not parse (the configuration was validated).
func (r Region) WANWindows() string {
	ws, err := settings.ParseRateWindows(r.WANRateWindows)
	if err != nil || len(ws) == 0 {
		return ""
	}
	return settings.FormatRateWindows(ws)
}
