package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"tms/settings"
	"tms/signing"
)

// Role is the program a configuration is for. It decides which sections Validate requires.
type Role string

const (
	// RoleCentral requires central.store, central.listen, central.data_dir,
	// central.signing_key_file and central.temporal, and refuses a plaintext, unauthenticated
	// central.temporal unless central.temporal.insecure is set.
	RoleCentral Role = "central"
	// RoleRegion requires region.id, region.data_dir, region.listen, region.central_public_key
	// and region.temporal, and region.endpoint when region.listen is a wildcard address; it
	// refuses a plaintext, unauthenticated region.temporal unless region.temporal.insecure is
	// set.
	RoleRegion Role = "region"
	// RoleAgent requires agent.region_url and agent.state_dir.
	RoleAgent Role = "agent"
	// RoleCLI requires nothing: command-line tools check only the values that are there.
	RoleCLI Role = "cli"
)

// FieldError is a problem with the value of one key. Its message never holds a secret.
type FieldError struct {
	Key string // like "region.id"
	Msg string
}

func (e *FieldError) Error() string { return "config: " + e.Key + ": " + e.Msg }

var (
	regionIDRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	labelKeyRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)
	serverIDRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)
	// bucketRE is S3's rule for bucket names, less the rarer exclusions (IP-address forms,
	// reserved prefixes) which the server enforces.
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// Validate checks c for role and returns every problem found, joined with errors.Join, each a
// *FieldError (a role other than the four constants is a plain error). Whatever the role,
// every value that is set must be well formed; the role adds the keys that must be set (see
// the Role constants).
func (c *Config) Validate(role Role) error {
	var v validator
	switch role {
	case RoleCentral, RoleRegion, RoleAgent, RoleCLI:
	default:
		return fmt.Errorf("config: unknown role %q", role)
	}

	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.s3(c.Store.S3)

	v.temporal("central.temporal", c.Central.Temporal, role == RoleCentral)
	v.storeLocation("central.store", c.Central.Store, role == RoleCentral)
	if role == RoleCentral && !c.Central.Listen.IsValid() {
		v.add("central.listen", "is required")
	}
	if role == RoleCentral && c.Central.DataDir == "" {
		v.add("central.data_dir", "is required")
	}
	if role == RoleCentral && c.Central.SigningKeyFile == "" {
		v.add("central.signing_key_file", "is required (central's ed25519 key file; tms central init creates it)")
	}
	v.database("central.database", c.Central.Database, "central.database_connect_timeout", c.Central.DatabaseConnectTimeout)
	v.serverTLS("central.tls", c.Central.TLS)
	v.cli(c.CLI)

	r := c.Region
	switch {
	case r.ID == "" && role == RoleRegion:
		v.add("region.id", "is required")
	case r.ID != "" && !regionIDRE.MatchString(r.ID):
		v.add("region.id", fmt.Sprintf("%q is not a valid region id (lowercase letters, digits and '-', at most 63)", r.ID))
	}
	v.temporal("region.temporal", r.Temporal, role == RoleRegion)
	v.storeLocation("region.store", r.Store, false)
	if r.DataDir == "" && role == RoleRegion {
		v.add("region.data_dir", "is required")
	}
	v.database("region.database", r.Database, "region.database_connect_timeout", r.DatabaseConnectTimeout)
	if role == RoleRegion && !r.Listen.IsValid() {
		v.add("region.listen", "is required")
	}
	switch m := r.MetricsListen; {
	case !m.IsValid():
	case m.Port() == 0:
		v.add("region.metrics_listen", fmt.Sprintf("%q has no port: use ip:port, like 10.0.0.2:9181", m))
	case m == r.Listen:
		v.add("region.metrics_listen", fmt.Sprintf("%s is region.listen: leave region.metrics_listen empty to serve /metrics there", m))
	}
	v.storeLocation("region.relay", r.Relay, false)
	switch k := strings.TrimSpace(r.CentralPublicKey); {
	case k == "" && role == RoleRegion:
		v.add("region.central_public_key", "is required (central's public key, tms-ed25519:…, or a file holding it; tms central pubkey prints it)")
	case strings.HasPrefix(k, signing.PublicKeyPrefix):
		if _, err := signing.ParsePublicKey(k); err != nil {
			v.add("region.central_public_key", err.Error())
		}
	}
	switch u := r.Endpoint; {
	case u != nil && u.Scheme == "http" && r.TLS.Enabled():
		v.add("region.endpoint", fmt.Sprintf("%q is http, but region.tls makes the service HTTPS: use https://", u.Redacted()))
	case u == nil:
		if role == RoleRegion && r.Listen.IsValid() && r.Listen.Addr().IsUnspecified() {
			v.add("region.endpoint", "is required when region.listen is a wildcard address: the URL terminals and peers reach this server at")
		}
	case u.Scheme != "http" && u.Scheme != "https":
		v.add("region.endpoint", fmt.Sprintf("%q is not an http or https URL", u.Redacted()))
	case u.Host == "":
		v.add("region.endpoint", fmt.Sprintf("%q has no host", u.Redacted()))
	}
	v.boot(r.Boot, role == RoleRegion)
	v.regionHTTP(r.HTTP)
	v.serverTLS("region.tls", r.TLS)
	if h := r.Boot.HTTPListen; h != "" {
		if _, err := netip.ParseAddrPort(h); err != nil {
			v.add("region.boot.http_listen", fmt.Sprintf("%q is not an address:port like 10.0.5.2:8380", h))
		}
	}
	v.labels("region.labels", r.Labels)
	v.labels("region.server_labels", r.ServerLabels)
	if id := r.ServerID; id != "" && !serverIDRE.MatchString(id) {
		v.add("region.server_id", fmt.Sprintf("%q is not a valid server id (lowercase letters, digits, '-' and '.', at most 63, like a host name)", id))
	}
	if d := r.Heartbeat; d != 0 && (d < 100*time.Millisecond || d > time.Minute) {
		v.add("region.heartbeat", fmt.Sprintf("%s is not between 100ms and 1m", d))
	}

	// The run-time settings central may change later are checked by the same rules as its
	// pushes (package settings).
	if z := r.Timezone; z != "" {
		v.setting("region.timezone", settings.KeyTimezone, z)
	}
	if r.StoreHighWater != 0 { // 0: the default
		v.setting("region.store_high_water", settings.KeyStoreHighWater, strconv.FormatFloat(r.StoreHighWater, 'f', -1, 64))
	}
	if r.StoreLowWater != 0 { // 0: the default
		v.setting("region.store_low_water", settings.KeyStoreLowWater, strconv.FormatFloat(r.StoreLowWater, 'f', -1, 64))
		high := r.StoreHighWater
		if high == 0 {
			high = settings.Defaults().StoreHighWater
		}
		if r.StoreLowWater >= high {
			v.add("region.store_low_water", fmt.Sprintf("%s is not below region.store_high_water (%s)", strconv.FormatFloat(r.StoreLowWater, 'f', -1, 64), strconv.FormatFloat(high, 'f', -1, 64)))
		}
	}
	if _, err := settings.ParseSize(r.StoreCapacity); err != nil {
		v.add("region.store_capacity", err.Error())
	}
	if r.WANRate != "" {
		v.setting("region.wan_rate", settings.KeyWANRate, r.WANRate)
	}
	if r.WANRateWindows != "" {
		v.setting("region.wan_rate_windows", settings.KeyWANRateWindows, r.WANRateWindows)
	}

	if d := r.ReportInterval; d != 0 && (d < time.Second || d > 10*time.Minute) {
		v.add("region.report_interval", fmt.Sprintf("%s is not between 1s and 10m", d))
	}

	a := c.Agent
	switch u := a.RegionURL; {
	case u == nil && role == RoleAgent:
		v.add("agent.region_url", "is required")
	case u == nil:
	case u.Scheme != "http" && u.Scheme != "https":
		v.add("agent.region_url", fmt.Sprintf("%q is not an http or https URL", u.Redacted()))
	case u.Host == "":
		v.add("agent.region_url", fmt.Sprintf("%q has no host", u.Redacted()))
	}
	if a.Disk != "" && !filepath.IsAbs(a.Disk) {
		v.add("agent.disk", fmt.Sprintf("%q is not an absolute path, like /dev/sda", a.Disk))
	}
	if a.StateDir == "" && role == RoleAgent {
		v.add("agent.state_dir", "is required")
	}
	return v.err()
}

// validator collects FieldErrors.
type validator struct{ errs []error }

func (v *validator) add(key, msg string) { v.errs = append(v.errs, &FieldError{Key: key, Msg: msg}) }
func (v *validator) err() error          { return errors.Join(v.errs...) }

func (v *validator) oneOf(key, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.add(key, fmt.Sprintf("%q is not one of %s", val, strings.Join(allowed, ", ")))
	}
}

func (v *validator) s3(s S3) {
	switch {
	case strings.Contains(s.Endpoint, "://"):
		// Load turns a well-formed URL into host:port; this one is malformed, or did not
		// come through Load.
		if _, _, err := endpointFromURL(s.Endpoint); err != nil {
			v.add("store.s3.endpoint", err.Error())
		} else {
			v.add("store.s3.endpoint", "must be host:port, with store.s3.insecure for http")
		}
	case s.Endpoint != "":
		if msg := checkHostPort(s.Endpoint, false); msg != "" {
			v.add("store.s3.endpoint", msg)
		}
	}
	// The credentials are secret: say which is missing, never what they are.
	switch {
	case s.AccessKey != "" && s.SecretKey == "":
		v.add("store.s3.secret_key", "is required when store.s3.access_key is set")
	case s.AccessKey == "" && s.SecretKey != "":
		v.add("store.s3.access_key", "is required when store.s3.secret_key is set")
	}
	if s.SessionToken != "" && s.AccessKey == "" {
		v.add("store.s3.access_key", "is required when store.s3.session_token is set")
	}
}

func (v *validator) temporal(prefix string, t Temporal, required bool) {
	switch {
	case t.Address == "" && required:
		v.add(prefix+".address", "is required")
	case t.Address != "":
		if msg := checkHostPort(t.Address, true); msg != "" {
			v.add(prefix+".address", msg)
		}
	}
	if t.Namespace == "" && (required || t.Address != "") {
		v.add(prefix+".namespace", "is required")
	}
	switch {
	case t.TLS.CertFile != "" && t.TLS.KeyFile == "":
		v.add(prefix+".tls.key_file", "is required when "+prefix+".tls.cert_file is set")
	case t.TLS.CertFile == "" && t.TLS.KeyFile != "":
		v.add(prefix+".tls.cert_file", "is required when "+prefix+".tls.key_file is set")
	}
	// A server's worker takes orders from Temporal: over plaintext without credentials, anyone
	// on the path could start workflows that deploy images and wipe terminals' disks.
	if required && t.Address != "" && t.Plaintext() && !t.Insecure {
		key := prefix + ".insecure"
		v.add(key, fmt.Sprintf("the connection to Temporal at %s would be plaintext and unauthenticated, and is refused: "+
			"configure TLS (%[2]s.tls.ca_file, %[2]s.tls.server_name, or %[2]s.tls.cert_file and key_file for mutual TLS) or an API key (%[2]s.api_key), "+
			"or, on a network you trust, set %[3]s to true (--%[4]s or %[5]s=true)",
			t.Address, prefix, key, flagName(key), envName(key)))
	}
}

// storeLocation checks a store location: a directory or s3://bucket/prefix.
func (v *validator) storeLocation(key, loc string, required bool) {
	if loc == "" {
		if required {
			v.add(key, "is required (a directory or s3://bucket/prefix)")
		}
		return
	}
	if !strings.Contains(loc, "://") {
		return // a directory
	}
	u, err := url.Parse(loc)
	switch {
	case err != nil:
		v.add(key, "is not a directory or s3://bucket/prefix")
	case u.User != nil:
		v.add(key, "must not hold credentials: use store.s3.access_key and store.s3.secret_key")
	case u.Scheme != "s3":
		v.add(key, fmt.Sprintf("%q is not a directory or s3://bucket/prefix", loc))
	case !bucketRE.MatchString(u.Host):
		v.add(key, fmt.Sprintf("%q is not a valid S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-')", u.Host))
	case u.RawQuery != "" || u.Fragment != "":
		v.add(key, fmt.Sprintf("%q: an s3 location has no query or fragment", loc))
	}
}

// checkHostPort returns what is wrong with s as host:port (host alone if port is optional), or
// "" if nothing is.
func checkHostPort(s string, portRequired bool) string {
	if strings.Contains(s, "@") {
		return "is not host:port" // and may hold a password
	}
	if strings.ContainsAny(s, "/ ") {
		return fmt.Sprintf("%q is not host:port", s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if portRequired || strings.Contains(s, ":") && !strings.HasPrefix(s, "[") {
			return fmt.Sprintf("%q is not host:port", s)
		}
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), ""
	}
	if host == "" {
		return fmt.Sprintf("%q has no host", s)
	}
	if port != "" || portRequired {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fmt.Sprintf("%q: the port must be a number from 1 to 65535", s)
		}
	}
	return ""
}

// regionHTTP checks the caps of a region's HTTP service.
func (v *validator) regionHTTP(h RegionHTTP) {
	if h.MaxConnsPerIP < 0 {
		v.add("region.http.max_conns_per_ip", fmt.Sprintf("%d is negative (0 means no cap)", h.MaxConnsPerIP))
	}
	if h.MaxConns < 0 {
		v.add("region.http.max_conns", fmt.Sprintf("%d is negative (0 means no cap)", h.MaxConns))
	}
	if h.MaxConns > 0 && h.MaxConnsPerIP > h.MaxConns {
		v.add("region.http.max_conns_per_ip", fmt.Sprintf("%d is more than region.http.max_conns (%d)", h.MaxConnsPerIP, h.MaxConns))
	}
}

// boot checks a region's boot service settings when it is enabled.
func (v *validator) boot(b Boot, region bool) {
	if !b.Enabled || !region {
		return
	}
	st, err := b.Settings()
	if err != nil {
		for _, e := range splitJoined(err) {
			key, msg, _ := strings.Cut(e.Error(), ": ")
			v.add(key, msg)
		}
	}
	if b.Interface == "" {
		v.add("region.boot.interface", "is required: the network interface the terminals are on")
	}
	if b.Address == "" {
		v.add("region.boot.address", "is required: this server's IPv4 address on region.boot.interface")
	}
	v.setting("region.boot.dhcp_unknown_per_mac", settings.KeyDHCPUnknownPerMAC, strconv.Itoa(b.DHCPUnknownPerMAC))
	v.setting("region.boot.dhcp_unknown_total", settings.KeyDHCPUnknownTotal, strconv.Itoa(b.DHCPUnknownTotal))
	switch b.DHCP {
	case "", "proxy", "off":
	case "full":
		if b.Pool == "" {
			v.add("region.boot.pool", "is required when region.boot.dhcp is full: the range handed out, like 10.0.5.100-10.0.5.199")
		}
		if b.Subnet == "" {
			v.add("region.boot.subnet", "is required when region.boot.dhcp is full, like 10.0.5.0/24")
		}
		if err == nil && st.Subnet.IsValid() && st.PoolStart.IsValid() && (!st.Subnet.Contains(st.PoolStart) || !st.Subnet.Contains(st.PoolEnd)) {
			v.add("region.boot.pool", fmt.Sprintf("%s is not inside region.boot.subnet %s", b.Pool, b.Subnet))
		}
	default:
		v.add("region.boot.dhcp", fmt.Sprintf("%q is not proxy, full or off", b.DHCP))
	}
	v.setting("region.boot.claim_quiet", settings.KeyClaimQuiet, b.ClaimQuiet.String())
	if b.WakeTimeout != 0 { // 0: the default
		v.setting("region.boot.wake_timeout", settings.KeyWakeTimeout, b.WakeTimeout.String())
	}
}

// setting checks value of a run-time setting (key as pushes name it) under the configuration
// key configKey.
func (v *validator) setting(configKey, key, value string) {
	if _, err := settings.Check(key, value); err != nil {
		v.add(configKey, strings.TrimPrefix(err.Error(), key+": "))
	}
}

func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// serverTLS checks that a certificate and its key come together.
func (v *validator) serverTLS(key string, t ServerTLS) {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.add(key+".key_file", "is required when "+key+".cert_file is set")
	case t.CertFile == "" && t.KeyFile != "":
		v.add(key+".cert_file", "is required when "+key+".key_file is set")
	}
}

// cli checks the command line's section.
func (v *validator) cli(c CLI) {
	if u := c.CentralURL; u != nil && (u.Scheme != "http" && u.Scheme != "https" || u.Host == "") {
		v.add("cli.central_url", fmt.Sprintf("%q is not an http(s)://host:port URL", u.Redacted()))
	}
}

// labels checks location or topology labels under key: names, values, and how many.
func (v *validator) labels(key string, labels map[string]string) {
	if len(labels) > maxLabels {
		v.add(key, fmt.Sprintf("%d labels, at most %d", len(labels), maxLabels))
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		key := key + "." + k
		if !labelKeyRE.MatchString(k) {
			v.add(key, "is not a valid label name (lowercase letters, digits, '.', '_' and '-', at most 63)")
		}
		if val := labels[k]; !labelValueRE.MatchString(val) {
			v.add(key, fmt.Sprintf("%q is not a valid label value (letters, digits, '.', '_' and '-', at most 63)", val))
		}
	}
}

// maxLabels is the most labels a region, server or group carries (state.MaxLabels).
const maxLabels = 16
