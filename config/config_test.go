package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// env returns a LoadOptions.Env that sees only vars.
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// writeFile writes content to name in a fresh directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testFlags declares flags the way a program would: some map to keys, one does not.
func testFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.String("log-level", "error", "")
	fs.String("central-listen", "", "")
	fs.Bool("store-s3-insecure", false, "")
	fs.StringToString("region-labels", nil, "")
	fs.String("region-data_dir", "", "") // '_' spelling of region-data-dir
	fs.Bool("verbose", false, "")        // not a key
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// fieldKeys returns the keys of the *FieldErrors in err, sorted, and fails the test if err holds
// anything else.
func fieldKeys(t *testing.T, err error) []string {
	t.Helper()
	var keys []string
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %q (%T) is not a *FieldError", e, e)
		}
		if prefix := "config: " + fe.Key + ": "; !strings.HasPrefix(e.Error(), prefix) {
			t.Errorf("error %q does not start with %q", e, prefix)
		}
		keys = append(keys, fe.Key)
	}
	slices.Sort(keys)
	return keys
}

func TestDefaults(t *testing.T) {
	cfg, err := Load(LoadOptions{Env: env(nil), Role: RoleCLI})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Defaults()) {
		t.Errorf("Load with no sources = %+v, want Defaults() = %+v", cfg, Defaults())
	}
	d := Defaults()
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"log.level", d.Log.Level, "info"},
		{"log.format", d.Log.Format, "text"},
		{"central.temporal.namespace", d.Central.Temporal.Namespace, "default"},
		{"region.temporal.namespace", d.Region.Temporal.Namespace, "default"},
		{"central.temporal.address", d.Central.Temporal.Address, "localhost:7233"},
		{"central.listen", d.Central.Listen, netip.MustParseAddrPort("[::]:8080")},
		{"region.listen", d.Region.Listen, netip.MustParseAddrPort("[::]:8081")},
		{"region.http.max_conns_per_ip", d.Region.HTTP.MaxConnsPerIP, 64},
		{"region.http.max_conns", d.Region.HTTP.MaxConns, 2048},
		{"region.tls", d.Region.TLS.Enabled(), false},
		{"agent.region_url", d.Agent.RegionURL, (*url.URL)(nil)},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("default %s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if err := d.Validate(RoleCLI); err != nil {
		t.Errorf("Defaults().Validate(RoleCLI) = %v", err)
	}
	d.Region.Temporal.Namespace = "changed"
	if Defaults().Region.Temporal.Namespace != "default" {
		t.Error("changing one Defaults() value changed the next")
	}
}

// The same settings as YAML and as TOML.
const (
	precedenceYAML = `
log:
  level: warn
central:
  listen: 127.0.0.1:9000
  store: /srv/file
store:
  s3:
    insecure: true
region:
  data_dir: /var/file
  labels:
    site: file
    floor: "1"
`
	precedenceTOML = `
[log]
level = "warn"
[central]
listen = "127.0.0.1:9000"
store = "/srv/file"
[store.s3]
insecure = true
[region]
data_dir = "/var/file"
[region.labels]
site = "file"
floor = "1"
`
)

func TestPrecedenceFileEnvFlags(t *testing.T) {
	type want struct {
		level    string
		listen   string
		insecure bool
		labels   map[string]string
		dataDir  string
	}
	fromFile := want{"warn", "127.0.0.1:9000", true, map[string]string{"site": "file", "floor": "1"}, "/var/file"}
	fullEnv := map[string]string{
		"TMS_LOG_LEVEL":         "error",
		"TMS_CENTRAL_LISTEN":    "127.0.0.1:9001",
		"TMS_STORE_S3_INSECURE": "false",
		"TMS_REGION_LABELS":     "site=env, room=12",
		"TMS_REGION_DATA_DIR":   "/var/env",
	}
	fromEnv := want{"error", "127.0.0.1:9001", false, map[string]string{"site": "env", "room": "12"}, "/var/env"}
	allFlags := []string{
		"--log-level=debug", "--central-listen=[::1]:9002", "--store-s3-insecure",
		"--region-labels=site=flag", "--region-data_dir=/var/flag", "--verbose",
	}
	fromFlags := want{"debug", "[::1]:9002", true, map[string]string{"site": "flag"}, "/var/flag"}

	for _, format := range []struct{ name, content string }{
		{"c.yaml", precedenceYAML},
		{"c.yml", precedenceYAML},
		{"c.toml", precedenceTOML},
	} {
		for _, tc := range []struct {
			name string
			file bool
			env  map[string]string
			args []string
			want want
		}{
			{name: "file over defaults", file: true, want: fromFile},
			{name: "env over file", file: true, env: fullEnv, want: fromEnv},
			{name: "flags over env", file: true, env: fullEnv, args: allFlags, want: fromFlags},
			{name: "flags over file", file: true, args: allFlags, want: fromFlags},
			{name: "env without file", env: fullEnv, want: fromEnv},
			{
				name: "flags not given leave env and file",
				file: true, env: map[string]string{"TMS_LOG_LEVEL": "error"}, args: []string{"--verbose"},
				want: want{"error", "127.0.0.1:9000", true, fromFile.labels, "/var/file"},
			},
			{
				name: "empty env is unset",
				file: true, env: map[string]string{"TMS_LOG_LEVEL": "", "TMS_CENTRAL_LISTEN": ""},
				want: fromFile,
			},
		} {
			t.Run(format.name+"/"+tc.name, func(t *testing.T) {
				opts := LoadOptions{Env: env(tc.env), Flags: testFlags(t, tc.args...), Role: RoleCLI}
				if tc.file {
					opts.File = writeFile(t, format.name, format.content)
				}
				cfg, err := Load(opts)
				if err != nil {
					t.Fatal(err)
				}
				got := want{cfg.Log.Level, cfg.Central.Listen.String(), cfg.Store.S3.Insecure, cfg.Region.Labels, cfg.Region.DataDir}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("got %+v\nwant %+v", got, tc.want)
				}
				// Keys no source sets keep their defaults.
				if cfg.Central.Temporal != Defaults().Central.Temporal || cfg.Log.Format != "text" {
					t.Errorf("untouched keys lost their defaults: %+v", cfg)
				}
			})
		}
	}
}

func TestEveryKeyFromEnvAndFlags(t *testing.T) {
	// One value per key, as an environment variable and as a string flag, must reach the field.
	values := map[string]string{
		"log.level":                        "debug",
		"log.format":                       "json",
		"store.s3.endpoint":                "minio:9000",
		"store.s3.access_key":              "ak",
		"store.s3.secret_key":              "sk",
		"store.s3.session_token":           "st",
		"store.s3.region":                  "eu-west-1",
		"store.s3.insecure":                "true",
		"central.temporal.address":         "t1:7233",
		"central.temporal.namespace":       "ns1",
		"central.temporal.tls.ca_file":     "/ca1",
		"central.temporal.tls.cert_file":   "/cert1",
		"central.temporal.tls.key_file":    "/key1",
		"central.temporal.tls.server_name": "sn1",
		"central.temporal.api_key":         "api1",
		"central.temporal.insecure":        "true",
		"central.store":                    "s3://bucket/prefix",
		"central.listen":                   "10.0.0.1:80",
		"central.data_dir":                 "/var/central",
		"central.database":                 "postgres://tms:pw@db1:5432/central",
		"central.database_connect_timeout": "30s",
		"central.signing_key_file":         "/etc/tms/central.key",
		"central.tls.cert_file":            "/etc/tms/central.pem",
		"central.tls.key_file":             "/etc/tms/central-tls.key",
		"cli.central_url":                  "https://central:8080",
		"region.id":                        "room-12",
		"region.temporal.address":          "t2:7233",
		"region.temporal.namespace":        "ns2",
		"region.temporal.tls.ca_file":      "/ca2",
		"region.temporal.tls.cert_file":    "/cert2",
		"region.temporal.tls.key_file":     "/key2",
		"region.temporal.tls.server_name":  "sn2",
		"region.temporal.api_key":          "api2",
		"region.temporal.insecure":         "true",
		"region.store":                     "/srv/region",
		"region.data_dir":                  "/var/region",
		"region.database":                  "postgresql://db2/room12?sslmode=require",
		"region.database_connect_timeout":  "2m",
		"region.listen":                    "10.0.0.2:81",
		"region.labels":                    "site=north",
		"region.server_id":                 "srv-a.room-12",
		"region.server_labels":             "room=a,rack=2",
		"region.heartbeat":                 "2s",
		"region.endpoint":                  "https://10.0.0.2:81",
		"region.http.max_conns_per_ip":     "12",
		"region.http.max_conns":            "345",
		"region.tls.cert_file":             "/etc/tms/region.pem",
		"region.tls.key_file":              "/etc/tms/region.key",
		"region.relay":                     "s3://bucket/prefix",
		"region.timezone":                  "Europe/Berlin",
		"region.store_high_water":          "0.8",
		"region.store_low_water":           "0.7",
		"region.store_capacity":            "2GiB",
		"region.wan_rate":                  "20MB/s",
		"region.wan_rate_windows":          "08:00-16:00=5MB/s,16:00-08:00=50MB/s",
		"region.unicast":                   "true",
		"region.central_public_key":        "/etc/tms/central.pub",
		"region.boot.enabled":              "true",
		"region.boot.interface":            "enp3s0",
		"region.boot.address":              "10.0.5.2",
		"region.boot.dhcp":                 "full",
		"region.boot.pool":                 "10.0.5.100-10.0.5.199",
		"region.boot.subnet":               "10.0.5.0/24",
		"region.boot.router":               "10.0.5.1",
		"region.boot.dns":                  "10.0.5.1,9.9.9.9",
		"region.boot.lease_time":           "2h",
		"region.boot.dhcp_allow":           "52:54:00:*, aa:bb:cc:dd:ee:ff",
		"region.boot.dhcp_unknown_per_mac": "6",
		"region.boot.dhcp_unknown_total":   "50",
		"region.boot.tftp_dir":             "/srv/ipxe",
		"region.boot.dir":                  "/srv/bootenv",
		"region.boot.kernel_args":          "console=ttyS0",
		"region.boot.claim_quiet":          "90s",
		"region.boot.wake_timeout":         "2m",
		"region.report_interval":           "30s",
		"region.boot.http_listen":          "10.0.5.2:8380",
		"region.metrics_listen":            "10.0.0.2:9181",
		"agent.region_url":                 "https://region:8081/api",
		"agent.disk":                       "/dev/sda",
		"agent.state_dir":                  "/var/agent",
	}
	want := Config{
		Log:   Log{Level: "debug", Format: "json"},
		Store: Store{S3: S3{Endpoint: "minio:9000", AccessKey: "ak", SecretKey: "sk", SessionToken: "st", Region: "eu-west-1", Insecure: true}},
		Central: Central{
			Temporal:               Temporal{Address: "t1:7233", Namespace: "ns1", TLS: TLS{"/ca1", "/cert1", "/key1", "sn1"}, APIKey: "api1", Insecure: true},
			Store:                  "s3://bucket/prefix",
			Listen:                 netip.MustParseAddrPort("10.0.0.1:80"),
			DataDir:                "/var/central",
			Database:               "postgres://tms:pw@db1:5432/central",
			DatabaseConnectTimeout: 30 * time.Second,
			SigningKeyFile:         "/etc/tms/central.key",
			TLS:                    ServerTLS{CertFile: "/etc/tms/central.pem", KeyFile: "/etc/tms/central-tls.key"},
		},
		CLI: CLI{CentralURL: &url.URL{Scheme: "https", Host: "central:8080"}},
		Region: Region{
			ID:                     "room-12",
			Temporal:               Temporal{Address: "t2:7233", Namespace: "ns2", TLS: TLS{"/ca2", "/cert2", "/key2", "sn2"}, APIKey: "api2", Insecure: true},
			Store:                  "/srv/region",
			DataDir:                "/var/region",
			Database:               "postgresql://db2/room12?sslmode=require",
			DatabaseConnectTimeout: 2 * time.Minute,
			Listen:                 netip.MustParseAddrPort("10.0.0.2:81"),
			MetricsListen:          netip.MustParseAddrPort("10.0.0.2:9181"),
			Labels:                 map[string]string{"site": "north"},
			ServerID:               "srv-a.room-12",
			ServerLabels:           map[string]string{"room": "a", "rack": "2"},
			Heartbeat:              2 * time.Second,
			Endpoint:               &url.URL{Scheme: "https", Host: "10.0.0.2:81"},
			HTTP:                   RegionHTTP{MaxConnsPerIP: 12, MaxConns: 345},
			TLS:                    ServerTLS{CertFile: "/etc/tms/region.pem", KeyFile: "/etc/tms/region.key"},
			Relay:                  "s3://bucket/prefix",
			Timezone:               "Europe/Berlin",
			ReportInterval:         30 * time.Second,
			StoreHighWater:         0.8,
			StoreLowWater:          0.7,
			StoreCapacity:          "2GiB",
			WANRate:                "20MB/s",
			WANRateWindows:         "08:00-16:00=5MB/s,16:00-08:00=50MB/s",
			Unicast:                true,
			CentralPublicKey:       "/etc/tms/central.pub",
			Boot: Boot{Enabled: true, Interface: "enp3s0", Address: "10.0.5.2", DHCP: "full", Pool: "10.0.5.100-10.0.5.199",
				Subnet: "10.0.5.0/24", Router: "10.0.5.1", DNS: "10.0.5.1,9.9.9.9", LeaseTime: 2 * time.Hour, TFTPDir: "/srv/ipxe",
				DHCPAllow: []string{"52:54:00:*", "aa:bb:cc:dd:ee:ff"}, DHCPUnknownPerMAC: 6, DHCPUnknownTotal: 50,
				Dir: "/srv/bootenv", KernelArgs: "console=ttyS0", ClaimQuiet: 90 * time.Second, HTTPListen: "10.0.5.2:8380",
				WakeTimeout: 2 * time.Minute},
		},
		Agent: Agent{RegionURL: &url.URL{Scheme: "https", Host: "region:8081", Path: "/api"}, Disk: "/dev/sda", StateDir: "/var/agent"},
	}
	if got := slices.Sorted(maps.Keys(values)); !slices.Equal(got, allKeys()) {
		t.Fatalf("test covers keys %v, want %v", got, allKeys())
	}

	t.Run("env", func(t *testing.T) {
		vars := map[string]string{}
		for k, v := range values {
			vars[envName(k)] = v
		}
		cfg, err := Load(LoadOptions{Env: env(vars), Role: RoleCLI})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*cfg, want) {
			t.Errorf("got  %#v\nwant %#v", *cfg, want)
		}
	})
	t.Run("flags", func(t *testing.T) {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		var args []string
		for k, v := range values {
			fs.String(flagName(k), "", "")
			args = append(args, "--"+flagName(k)+"="+v)
		}
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(LoadOptions{Env: env(nil), Flags: fs, Role: RoleCLI})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*cfg, want) {
			t.Errorf("got  %#v\nwant %#v", *cfg, want)
		}
	})
}

func allKeys() []string {
	var keys []string
	for _, f := range keyFields() {
		keys = append(keys, f.key)
	}
	slices.Sort(keys)
	return keys
}

func TestNamesAreUniqueAndDocumented(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	envs, flags := map[string]string{}, map[string]string{}
	for _, key := range allKeys() {
		if other, ok := envs[envName(key)]; ok {
			t.Errorf("keys %s and %s share environment variable %s", other, key, envName(key))
		}
		envs[envName(key)] = key
		if other, ok := flags[flagName(key)]; ok {
			t.Errorf("keys %s and %s share flag --%s", other, key, flagName(key))
		}
		flags[flagName(key)] = key

		documented := key
		if strings.HasPrefix(key, "region.temporal.") {
			documented = "region.temporal.*"
		}
		if !regexp.MustCompile(`(?m)^//\t` + regexp.QuoteMeta(documented) + `( |$)`).Match(doc) {
			t.Errorf("key %s is not in the table in doc.go", documented)
		}
	}
}

func TestAWSFallback(t *testing.T) {
	aws := map[string]string{
		"AWS_ACCESS_KEY_ID":     "aws-ak",
		"AWS_SECRET_ACCESS_KEY": "aws-sk",
		"AWS_SESSION_TOKEN":     "aws-st",
		"AWS_REGION":            "aws-region",
	}
	with := func(extra map[string]string) map[string]string {
		m := maps.Clone(aws)
		maps.Copy(m, extra)
		return m
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		file string
		want S3
	}{
		{
			name: "AWS variables alone",
			env:  aws,
			want: S3{AccessKey: "aws-ak", SecretKey: "aws-sk", SessionToken: "aws-st", Region: "aws-region"},
		},
		{
			name: "TMS variables win",
			env: with(map[string]string{
				"TMS_STORE_S3_ACCESS_KEY": "tms-ak", "TMS_STORE_S3_SECRET_KEY": "tms-sk",
				"TMS_STORE_S3_SESSION_TOKEN": "tms-st", "TMS_STORE_S3_REGION": "tms-region",
			}),
			want: S3{AccessKey: "tms-ak", SecretKey: "tms-sk", SessionToken: "tms-st", Region: "tms-region"},
		},
		{
			name: "file wins",
			env:  aws,
			file: "store:\n  s3:\n    access_key: file-ak\n    secret_key: file-sk\n    region: file-region\n",
			want: S3{AccessKey: "file-ak", SecretKey: "file-sk", SessionToken: "aws-st", Region: "file-region"},
		},
		{
			name: "empty TMS variable falls back",
			env:  with(map[string]string{"TMS_STORE_S3_ACCESS_KEY": ""}),
			want: S3{AccessKey: "aws-ak", SecretKey: "aws-sk", SessionToken: "aws-st", Region: "aws-region"},
		},
		{
			name: "AWS_DEFAULT_REGION when AWS_REGION is unset",
			env:  map[string]string{"AWS_DEFAULT_REGION": "default-region"},
			want: S3{Region: "default-region"},
		},
		{
			name: "AWS_REGION over AWS_DEFAULT_REGION",
			env:  with(map[string]string{"AWS_DEFAULT_REGION": "default-region"}),
			want: S3{AccessKey: "aws-ak", SecretKey: "aws-sk", SessionToken: "aws-st", Region: "aws-region"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := LoadOptions{Env: env(tc.env), Role: RoleCLI}
			if tc.file != "" {
				opts.File = writeFile(t, "c.yaml", tc.file)
			}
			cfg, err := Load(opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Store.S3; got != tc.want {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestS3EndpointScheme(t *testing.T) {
	for _, tc := range []struct {
		name         string
		env          map[string]string
		wantEndpoint string
		wantInsecure bool
		wantErr      bool
	}{
		{name: "host:port keeps insecure unset", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "minio:9000"}, wantEndpoint: "minio:9000"},
		{
			name:         "host:port keeps insecure set",
			env:          map[string]string{"TMS_STORE_S3_ENDPOINT": "minio:9000", "TMS_STORE_S3_INSECURE": "true"},
			wantEndpoint: "minio:9000", wantInsecure: true,
		},
		{name: "host alone", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "s3.amazonaws.com"}, wantEndpoint: "s3.amazonaws.com"},
		{name: "http means insecure", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "http://minio:9000"}, wantEndpoint: "minio:9000", wantInsecure: true},
		{
			name:         "https wins over insecure",
			env:          map[string]string{"TMS_STORE_S3_ENDPOINT": "https://minio:9000", "TMS_STORE_S3_INSECURE": "true"},
			wantEndpoint: "minio:9000",
		},
		{name: "trailing slash", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "http://[::1]:9000/"}, wantEndpoint: "[::1]:9000", wantInsecure: true},
		{name: "other scheme", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "ftp://minio:9000"}, wantErr: true},
		{name: "path", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "https://minio:9000/bucket"}, wantErr: true},
		{name: "no host", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "https://"}, wantErr: true},
		{name: "credentials in URL", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "https://ak:hunter2@minio:9000"}, wantErr: true},
		{name: "bad port", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "minio:http"}, wantErr: true},
		{name: "path without scheme", env: map[string]string{"TMS_STORE_S3_ENDPOINT": "minio:9000/bucket"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(LoadOptions{Env: env(tc.env), Role: RoleCLI})
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Load succeeded with endpoint %q", cfg.Store.S3.Endpoint)
				}
				if keys := fieldKeys(t, err); !slices.Equal(keys, []string{"store.s3.endpoint"}) {
					t.Errorf("error keys %v, want [store.s3.endpoint]", keys)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := cfg.Store.S3; s.Endpoint != tc.wantEndpoint || s.Insecure != tc.wantInsecure {
				t.Errorf("endpoint %q insecure %t, want %q %t", s.Endpoint, s.Insecure, tc.wantEndpoint, tc.wantInsecure)
			}
		})
	}
}

// valid returns a configuration that passes Validate for every role.
func valid() *Config {
	c := Defaults()
	c.Central.Store = "s3://images/master"
	c.Region.ID = "room-12"
	c.Region.DataDir = "/var/lib/tms/region"
	c.Region.Labels = map[string]string{"site": "north", "floor": "2"}
	c.Region.Endpoint = &url.URL{Scheme: "http", Host: "region:8081"}
	c.Central.SigningKeyFile = "/etc/tms/central.key"
	c.Region.CentralPublicKey = "/etc/tms/central.pub"
	c.Agent.RegionURL = &url.URL{Scheme: "http", Host: "region:8081"}
	c.Central.Temporal.TLS.CAFile = "/etc/tms/temporal-ca.pem"
	c.Region.Temporal.TLS.CAFile = "/etc/tms/temporal-ca.pem"
	return c
}

func TestValidateNamesEveryKey(t *testing.T) {
	all := []Role{RoleCentral, RoleRegion, RoleAgent, RoleCLI}
	for _, tc := range []struct {
		name   string
		roles  []Role
		change func(c *Config)
		want   []string // keys, sorted
	}{
		{name: "valid", roles: all, change: func(c *Config) {}},
		{name: "defaults for cli", roles: []Role{RoleCLI}, change: func(c *Config) { *c = *Defaults() }},
		{name: "log level", roles: all, change: func(c *Config) { c.Log.Level = "verbose" }, want: []string{"log.level"}},
		{name: "log format", roles: all, change: func(c *Config) { c.Log.Format = "xml" }, want: []string{"log.format"}},
		{name: "s3 endpoint", roles: all, change: func(c *Config) { c.Store.S3.Endpoint = "minio:0" }, want: []string{"store.s3.endpoint"}},
		{name: "s3 endpoint URL not through Load", roles: all, change: func(c *Config) { c.Store.S3.Endpoint = "http://minio:9000" }, want: []string{"store.s3.endpoint"}},
		{name: "s3 access key alone", roles: all, change: func(c *Config) { c.Store.S3.AccessKey = "ak" }, want: []string{"store.s3.secret_key"}},
		{name: "s3 secret key alone", roles: all, change: func(c *Config) { c.Store.S3.SecretKey = "sk" }, want: []string{"store.s3.access_key"}},
		{name: "s3 session token alone", roles: all, change: func(c *Config) { c.Store.S3.SessionToken = "st" }, want: []string{"store.s3.access_key"}},
		{name: "central store missing", roles: []Role{RoleCentral}, change: func(c *Config) { c.Central.Store = "" }, want: []string{"central.store"}},
		{name: "central store missing, other roles", roles: []Role{RoleRegion, RoleAgent, RoleCLI}, change: func(c *Config) { c.Central.Store = "" }},
		{name: "central store directory", roles: all, change: func(c *Config) { c.Central.Store = "/srv/images" }},
		{name: "central store scheme", roles: all, change: func(c *Config) { c.Central.Store = "gs://images" }, want: []string{"central.store"}},
		{name: "central store bucket", roles: all, change: func(c *Config) { c.Central.Store = "s3://Images_1/x" }, want: []string{"central.store"}},
		{name: "central store credentials", roles: all, change: func(c *Config) { c.Central.Store = "s3://ak:sk@images/x" }, want: []string{"central.store"}},
		{name: "central listen", roles: []Role{RoleCentral}, change: func(c *Config) { c.Central.Listen = netip.AddrPort{} }, want: []string{"central.listen"}},
		{
			name: "central temporal missing", roles: []Role{RoleCentral},
			change: func(c *Config) { c.Central.Temporal = Temporal{} },
			want:   []string{"central.temporal.address", "central.temporal.namespace"},
		},
		{name: "central temporal missing, cli", roles: []Role{RoleCLI}, change: func(c *Config) { c.Central.Temporal = Temporal{} }},
		{name: "temporal address port", roles: all, change: func(c *Config) { c.Central.Temporal.Address = "temporal" }, want: []string{"central.temporal.address"}},
		{name: "temporal namespace", roles: all, change: func(c *Config) { c.Region.Temporal.Namespace = "" }, want: []string{"region.temporal.namespace"}},
		{name: "temporal key without cert", roles: all, change: func(c *Config) { c.Region.Temporal.TLS.KeyFile = "/k" }, want: []string{"region.temporal.tls.cert_file"}},
		{name: "temporal cert without key", roles: all, change: func(c *Config) { c.Central.Temporal.TLS.CertFile = "/c" }, want: []string{"central.temporal.tls.key_file"}},
		{name: "central temporal plaintext", roles: []Role{RoleCentral}, change: func(c *Config) { c.Central.Temporal.TLS = TLS{} }, want: []string{"central.temporal.insecure"}},
		{name: "central temporal plaintext, other roles", roles: []Role{RoleRegion, RoleAgent, RoleCLI}, change: func(c *Config) { c.Central.Temporal.TLS = TLS{} }},
		{name: "region temporal plaintext", roles: []Role{RoleRegion}, change: func(c *Config) { c.Region.Temporal.TLS = TLS{} }, want: []string{"region.temporal.insecure"}},
		{name: "region temporal plaintext, other roles", roles: []Role{RoleCentral, RoleAgent, RoleCLI}, change: func(c *Config) { c.Region.Temporal.TLS = TLS{} }},
		{name: "temporal plaintext allowed by insecure", roles: all, change: func(c *Config) {
			c.Central.Temporal.TLS, c.Region.Temporal.TLS = TLS{}, TLS{}
			c.Central.Temporal.Insecure, c.Region.Temporal.Insecure = true, true
		}},
		{name: "temporal API key without TLS settings", roles: all, change: func(c *Config) {
			c.Central.Temporal.TLS, c.Region.Temporal.TLS = TLS{}, TLS{}
			c.Central.Temporal.APIKey, c.Region.Temporal.APIKey = "key", "key"
		}},
		{name: "temporal TLS with the system's roots", roles: all, change: func(c *Config) {
			c.Central.Temporal.TLS = TLS{ServerName: "temporal.school.lan"}
			c.Region.Temporal.TLS = TLS{ServerName: "temporal.school.lan"}
		}},
		{name: "region id", roles: all, change: func(c *Config) { c.Region.ID = "Lab 1" }, want: []string{"region.id"}},
		{name: "region id too long", roles: all, change: func(c *Config) { c.Region.ID = strings.Repeat("a", 64) }, want: []string{"region.id"}},
		{name: "region id leading dash", roles: all, change: func(c *Config) { c.Region.ID = "-a" }, want: []string{"region.id"}},
		{
			name: "region missing", roles: []Role{RoleRegion},
			change: func(c *Config) { c.Region = Region{} },
			want:   []string{"region.central_public_key", "region.data_dir", "region.id", "region.listen", "region.temporal.address", "region.temporal.namespace"},
		},
		{name: "region endpoint for a wildcard listen", roles: []Role{RoleRegion}, change: func(c *Config) { c.Region.Endpoint = nil }, want: []string{"region.endpoint"}},
		{name: "region endpoint for a wildcard listen, other roles", roles: []Role{RoleCentral, RoleAgent, RoleCLI}, change: func(c *Config) { c.Region.Endpoint = nil }},
		{name: "region endpoint for a specific listen", roles: all, change: func(c *Config) {
			c.Region.Endpoint = nil
			c.Region.Listen = netip.MustParseAddrPort("10.0.0.2:8081")
		}},
		{name: "region endpoint scheme", roles: all, change: func(c *Config) { c.Region.Endpoint.Scheme = "ftp" }, want: []string{"region.endpoint"}},
		{name: "region endpoint host", roles: all, change: func(c *Config) { c.Region.Endpoint.Host = "" }, want: []string{"region.endpoint"}},
		{name: "region http no caps", roles: all, change: func(c *Config) { c.Region.HTTP = RegionHTTP{} }},
		{name: "region http negative caps", roles: all, change: func(c *Config) { c.Region.HTTP = RegionHTTP{MaxConnsPerIP: -1, MaxConns: -1} },
			want: []string{"region.http.max_conns", "region.http.max_conns_per_ip"}},
		{name: "region http per-ip cap over the total", roles: all, change: func(c *Config) { c.Region.HTTP = RegionHTTP{MaxConnsPerIP: 100, MaxConns: 50} },
			want: []string{"region.http.max_conns_per_ip"}},
		{name: "region http per-ip cap with no total", roles: all, change: func(c *Config) { c.Region.HTTP = RegionHTTP{MaxConnsPerIP: 100} }},
		{name: "region tls", roles: all, change: func(c *Config) {
			c.Region.TLS = ServerTLS{CertFile: "/c", KeyFile: "/k"}
			c.Region.Endpoint.Scheme = "https"
		}},
		{name: "region tls cert without key", roles: all, change: func(c *Config) {
			c.Region.TLS.CertFile = "/c"
			c.Region.Endpoint.Scheme = "https"
		}, want: []string{"region.tls.key_file"}},
		{name: "region tls key without cert", roles: all, change: func(c *Config) {
			c.Region.TLS.KeyFile = "/k"
			c.Region.Endpoint.Scheme = "https"
		}, want: []string{"region.tls.cert_file"}},
		{name: "region tls with an http endpoint", roles: all, change: func(c *Config) { c.Region.TLS = ServerTLS{CertFile: "/c", KeyFile: "/k"} },
			want: []string{"region.endpoint"}},
		{name: "region boot http listen", roles: []Role{RoleRegion}, change: func(c *Config) {
			c.Region.TLS = ServerTLS{CertFile: "/c", KeyFile: "/k"}
			c.Region.Endpoint.Scheme = "https"
			c.Region.Boot = Boot{Enabled: true, Interface: "eth1", Address: "10.0.5.2", DHCP: "proxy", DHCPUnknownPerMAC: 12, DHCPUnknownTotal: 20, HTTPListen: "10.0.5.2"}
		}, want: []string{"region.boot.http_listen"}},
		{name: "region metrics listen apart", roles: all, change: func(c *Config) { c.Region.MetricsListen = netip.MustParseAddrPort("127.0.0.1:9181") }},
		{name: "region metrics listen without a port", roles: all, change: func(c *Config) { c.Region.MetricsListen = netip.MustParseAddrPort("127.0.0.1:0") },
			want: []string{"region.metrics_listen"}},
		{name: "region metrics listen on region listen", roles: all, change: func(c *Config) { c.Region.MetricsListen = c.Region.Listen },
			want: []string{"region.metrics_listen"}},
		{name: "region relay", roles: all, change: func(c *Config) { c.Region.Relay = "gs://images" }, want: []string{"region.relay"}},
		{name: "central data dir and key", roles: []Role{RoleCentral}, change: func(c *Config) { c.Central.DataDir = ""; c.Central.SigningKeyFile = "" }, want: []string{"central.data_dir", "central.signing_key_file"}},
		{name: "central data dir and key, other roles", roles: []Role{RoleRegion, RoleAgent, RoleCLI}, change: func(c *Config) { c.Central.DataDir = ""; c.Central.SigningKeyFile = "" }},
		{name: "region missing, other roles", roles: []Role{RoleCentral, RoleAgent, RoleCLI}, change: func(c *Config) { c.Region = Region{} }},
		{name: "region store", roles: all, change: func(c *Config) { c.Region.Store = "s3://x" }, want: []string{"region.store"}},
		{name: "server id and labels", roles: all, change: func(c *Config) {
			c.Region.ServerID, c.Region.ServerLabels, c.Region.Heartbeat = "srv-a.lab", map[string]string{"room": "a"}, time.Second
		}},
		{name: "server id not a host name", roles: all, change: func(c *Config) { c.Region.ServerID = "Srv_A" }, want: []string{"region.server_id"}},
		{name: "server labels", roles: all, change: func(c *Config) { c.Region.ServerLabels = map[string]string{"Room": "a"} },
			want: []string{"region.server_labels.Room"}},
		{name: "heartbeat out of bounds", roles: all, change: func(c *Config) { c.Region.Heartbeat = time.Hour }, want: []string{"region.heartbeat"}},
		{
			name: "region labels", roles: all,
			change: func(c *Config) { c.Region.Labels = map[string]string{"Site!": "north", "room": "a b"} },
			want:   []string{"region.labels.Site!", "region.labels.room"},
		},
		{name: "region timezone", roles: all, change: func(c *Config) { c.Region.Timezone = "Europe/Atlantis" }, want: []string{"region.timezone"}},
		{name: "region timezone Local", roles: all, change: func(c *Config) { c.Region.Timezone = "Local" }, want: []string{"region.timezone"}},
		{name: "report interval too short", roles: all, change: func(c *Config) { c.Region.ReportInterval = 100 * time.Millisecond }, want: []string{"region.report_interval"}},
		{name: "report interval too long", roles: all, change: func(c *Config) { c.Region.ReportInterval = time.Hour }, want: []string{"region.report_interval"}},
		{name: "region timezone named", roles: all, change: func(c *Config) { c.Region.Timezone = "America/New_York" }},
		{name: "region store high water", roles: all, change: func(c *Config) { c.Region.StoreHighWater = 1 }, want: []string{"region.store_high_water"}},
		{name: "region store low water", roles: all, change: func(c *Config) { c.Region.StoreLowWater = 0.2 }, want: []string{"region.store_low_water"}},
		{name: "region store low water above high", roles: all, change: func(c *Config) { c.Region.StoreHighWater, c.Region.StoreLowWater = 0.8, 0.85 }, want: []string{"region.store_low_water"}},
		{name: "region store low water below high", roles: all, change: func(c *Config) { c.Region.StoreHighWater, c.Region.StoreLowWater = 0.8, 0.6 }},
		{name: "region store capacity", roles: all, change: func(c *Config) { c.Region.StoreCapacity = "2 GiB" }},
		{name: "region store capacity bad", roles: all, change: func(c *Config) { c.Region.StoreCapacity = "lots" }, want: []string{"region.store_capacity"}},
		{name: "region wan rate", roles: all, change: func(c *Config) { c.Region.WANRate = "10 MB" }, want: []string{"region.wan_rate"}},
		{name: "region wan rate off", roles: all, change: func(c *Config) { c.Region.WANRate = "off" }},
		{name: "region wan rate windows", roles: all, change: func(c *Config) { c.Region.WANRateWindows = "08:00-16:00=5MB/s,12:00-13:00=1MB/s" }, want: []string{"region.wan_rate_windows"}},
		{name: "agent missing", roles: []Role{RoleAgent}, change: func(c *Config) { c.Agent = Agent{} }, want: []string{"agent.region_url", "agent.state_dir"}},
		{name: "agent missing, other roles", roles: []Role{RoleCentral, RoleRegion, RoleCLI}, change: func(c *Config) { c.Agent = Agent{} }},
		{name: "agent url scheme", roles: all, change: func(c *Config) { c.Agent.RegionURL.Scheme = "ftp" }, want: []string{"agent.region_url"}},
		{name: "agent url host", roles: all, change: func(c *Config) { c.Agent.RegionURL.Host = "" }, want: []string{"agent.region_url"}},
		{name: "agent disk", roles: all, change: func(c *Config) { c.Agent.Disk = "sda" }, want: []string{"agent.disk"}},
		{
			name: "everything at once", roles: []Role{RoleCLI},
			change: func(c *Config) { c.Log.Level = "x"; c.Region.ID = "X"; c.Agent.Disk = "sda" },
			want:   []string{"agent.disk", "log.level", "region.id"},
		},
	} {
		for _, role := range tc.roles {
			t.Run(tc.name+"/"+string(role), func(t *testing.T) {
				c := valid()
				tc.change(c)
				err := c.Validate(role)
				if len(tc.want) == 0 {
					if err != nil {
						t.Fatalf("Validate(%s) = %v", role, err)
					}
					return
				}
				if err == nil {
					t.Fatalf("Validate(%s) = nil, want errors for %v", role, tc.want)
				}
				if got := fieldKeys(t, err); !slices.Equal(got, tc.want) {
					t.Errorf("Validate(%s) = %v\nkeys %v, want %v", role, err, got, tc.want)
				}
			})
		}
	}
}

func TestValidateMessages(t *testing.T) {
	c := valid()
	c.Region.ID = "Lab 1"
	want := `config: region.id: "Lab 1" is not a valid region id (lowercase letters, digits and '-', at most 63)`
	if err := c.Validate(RoleRegion); err == nil || err.Error() != want {
		t.Errorf("Validate = %v\nwant %s", err, want)
	}
	c = valid()
	c.Store.S3.Endpoint = "ftp://minio"
	c.Log.Level = "loud"
	if err := c.Validate(RoleCLI); err == nil || !strings.Contains(err.Error(), `config: store.s3.endpoint: "ftp://minio": the scheme must be http or https`) {
		t.Errorf("Validate = %v, want the endpoint's scheme named", err)
	}
	c = valid()
	c.Central.Temporal.TLS = TLS{}
	c.Central.Temporal.Address = "temporal.school.lan:7233"
	want = "config: central.temporal.insecure: the connection to Temporal at temporal.school.lan:7233 would be plaintext and unauthenticated, and is refused: " +
		"configure TLS (central.temporal.tls.ca_file, central.temporal.tls.server_name, or central.temporal.tls.cert_file and key_file for mutual TLS) or an API key (central.temporal.api_key), " +
		"or, on a network you trust, set central.temporal.insecure to true (--central-temporal-insecure or TMS_CENTRAL_TEMPORAL_INSECURE=true)"
	if err := c.Validate(RoleCentral); err == nil || err.Error() != want {
		t.Errorf("Validate = %v\nwant %s", err, want)
	}
	if err := valid().Validate("server"); err == nil {
		t.Error("Validate accepted an unknown role")
	}
	if err := valid().Validate(""); err == nil {
		t.Error("Validate accepted the zero Role")
	}
}

func TestLoadValidatesForRole(t *testing.T) {
	vars := map[string]string{"TMS_REGION_ID": "Lab 1", "TMS_CENTRAL_TEMPORAL_INSECURE": "true", "TMS_REGION_TEMPORAL_INSECURE": "true"}
	for _, tc := range []struct {
		role Role
		want []string
	}{
		{RoleCLI, []string{"region.id"}},
		{RoleRegion, []string{"region.central_public_key", "region.data_dir", "region.endpoint", "region.id"}},
		{RoleCentral, []string{"central.signing_key_file", "central.store", "region.id"}},
		{RoleAgent, []string{"agent.region_url", "region.id"}},
	} {
		t.Run(string(tc.role), func(t *testing.T) {
			cfg, err := Load(LoadOptions{Env: env(vars), Role: tc.role})
			if err == nil {
				t.Fatalf("Load = %+v, want an error", cfg)
			}
			if got := fieldKeys(t, err); !slices.Equal(got, tc.want) {
				t.Errorf("keys %v, want %v (%v)", got, tc.want, err)
			}
		})
	}
}

func TestBadValuesNameTheirKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		file   string // YAML
		want   string // key
		secret string // must not appear in the error
	}{
		{name: "address", env: map[string]string{"TMS_CENTRAL_LISTEN": "localhost"}, want: "central.listen"},
		{name: "address without ip", env: map[string]string{"TMS_REGION_LISTEN": ":8081"}, want: "region.listen"},
		{name: "bool", env: map[string]string{"TMS_STORE_S3_INSECURE": "maybe"}, want: "store.s3.insecure"},
		{name: "int", env: map[string]string{"TMS_REGION_HTTP_MAX_CONNS_PER_IP": "lots"}, want: "region.http.max_conns_per_ip"},
		{name: "negative int", file: "region:\n  http:\n    max_conns: -5\n", want: "region.http.max_conns"},
		{name: "labels", env: map[string]string{"TMS_REGION_LABELS": "site"}, want: "region.labels"},
		{
			name: "url", env: map[string]string{"TMS_AGENT_REGION_URL": "http://agent:hunter2@bad host/"},
			want: "agent.region_url", secret: "hunter2",
		},
		{name: "section as scalar", file: "central:\n  temporal: 5\n", want: "central.temporal"},
		{name: "list for string", file: "region:\n  id: [a, b]\n", want: "region.id"},
		{name: "address in file", file: "central:\n  listen: 8080\n", want: "central.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := LoadOptions{Env: env(tc.env), Role: RoleCLI}
			if tc.file != "" {
				opts.File = writeFile(t, "c.yaml", tc.file)
			}
			cfg, err := Load(opts)
			if err == nil {
				t.Fatalf("Load = %+v, want an error", cfg)
			}
			if got := fieldKeys(t, err); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("keys %v, want [%s] (%v)", got, tc.want, err)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}

func TestUnknownKeyInFile(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                []string
	}{
		{
			name: "yaml", file: "c.yaml",
			content: "central:\n  lisen: 127.0.0.1:1\nbogus: 1\nregion:\n  labels:\n    anything: goes\n",
			want:    []string{"bogus", "central.lisen"},
		},
		{
			name: "toml", file: "c.toml",
			content: "bogus = 1\n[central]\nlisen = \"127.0.0.1:1\"\n[region.labels]\nanything = \"goes\"\n",
			want:    []string{"bogus", "central.lisen"},
		},
		{name: "key below a leaf", file: "c.yaml", content: "log:\n  level:\n    name: debug\n", want: []string{"log.level.name"}},
		{name: "key below a section of another", file: "c.yaml", content: "agent:\n  temporal:\n    address: x:1\n", want: []string{"agent.temporal.address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.file, tc.content)
			cfg, err := Load(LoadOptions{File: path, Env: env(nil), Role: RoleCLI})
			if err == nil {
				t.Fatalf("Load = %+v, want an error", cfg)
			}
			if got := fieldKeys(t, err); !slices.Equal(got, tc.want) {
				t.Errorf("keys %v, want %v (%v)", got, tc.want, err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
}

func TestNullKeepsDefaults(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		// A YAML section whose keys are all commented out is null.
		{"section", "central:\n#  listen: 127.0.0.1:1\nregion:\n  id: room-1\n"},
		{"key", "central:\n  listen: ~\n  temporal:\n    address:\nregion:\n  id: room-1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(LoadOptions{File: writeFile(t, "c.yaml", tc.content), Env: env(nil), Role: RoleCLI})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Central != Defaults().Central || cfg.Region.ID != "room-1" {
				t.Errorf("central %+v region id %q, want defaults and room-1", cfg.Central, cfg.Region.ID)
			}
		})
	}
}

func TestFileErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file, content string
		notExist            bool
	}{
		{name: "missing", file: "missing.yaml", notExist: true},
		{name: "garbled yaml", file: "bad.yaml", content: "store:\n  s3:\n    secret_key: hunter2\n  - [\n"},
		{name: "garbled toml", file: "bad.toml", content: "[store.s3]\nsecret_key = \"hunter2\"\n[[[\n"},
		{name: "unknown type", file: "c.json", content: "{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			if !tc.notExist {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(LoadOptions{File: path, Env: env(nil), Role: RoleCLI})
			var fe *FileError
			if !errors.As(err, &fe) || fe.Path != path {
				t.Fatalf("Load = %v, want a *FileError for %s", err, path)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the file's secret: %v", err)
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tc.notExist {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %t, want %t", got, tc.notExist)
			}
		})
	}
}

func TestSecretsRedacted(t *testing.T) {
	secrets := []string{"AKIDSECRET1", "SKSECRET2", "TOKENSECRET3", "APIKEYSECRET4", "APIKEYSECRET5"}
	cfg := valid()
	cfg.Store.S3 = S3{Endpoint: "minio:9000", AccessKey: secrets[0], SecretKey: secrets[1], SessionToken: secrets[2], Region: "r"}
	cfg.Central.Temporal.APIKey = secrets[3]
	cfg.Region.Temporal.APIKey = secrets[4]

	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out = append(out,
			fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, *cfg), fmt.Sprintf(verb, cfg.Store),
			fmt.Sprintf(verb, cfg.Store.S3), fmt.Sprintf(verb, cfg.Central.Temporal), fmt.Sprintf(verb, cfg.Region))
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("cfg", "s3", cfg.Store.S3, "temporal", cfg.Central.Temporal, "region", cfg.Region, "all", cfg)
		out = append(out, b.String())
	}
	// Errors from Load and Validate, with every secret set and something wrong.
	vars := map[string]string{
		"TMS_STORE_S3_ACCESS_KEY": secrets[0], "TMS_STORE_S3_SESSION_TOKEN": secrets[2],
		"TMS_CENTRAL_TEMPORAL_API_KEY": secrets[3], "TMS_REGION_TEMPORAL_API_KEY": secrets[4],
		"TMS_REGION_ID": "Bad ID",
	}
	if _, err := Load(LoadOptions{Env: env(vars), Role: RoleCentral}); err == nil {
		t.Error("Load succeeded, want errors")
	} else {
		out = append(out, err.Error())
	}

	for _, s := range out {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("output shows secret %s: %s", secret, s)
			}
		}
	}
	if s := cfg.Store.S3.String(); !strings.Contains(s, "minio:9000") || !strings.Contains(s, "[redacted]") {
		t.Errorf("S3.String() = %s, want the endpoint and [redacted]", s)
	}
	if s := (S3{}).String(); strings.Contains(s, "[redacted]") {
		t.Errorf("S3{}.String() = %s, claims secrets that are unset", s)
	}
}

func TestLog(t *testing.T) {
	for _, tc := range []struct {
		level string
		want  slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"error", slog.LevelError},
	} {
		if got := (Log{Level: tc.level}).SlogLevel(); got != tc.want {
			t.Errorf("Log{Level: %q}.SlogLevel() = %v, want %v", tc.level, got, tc.want)
		}
	}
	for _, tc := range []struct {
		log        Log
		want, skip string
	}{
		{Log{Level: "info", Format: "json"}, `{"time":`, "hidden"},
		{Log{Level: "debug", Format: "text"}, "time=", ""},
	} {
		var b bytes.Buffer
		l := slog.New(tc.log.NewHandler(&b))
		l.Debug("hidden")
		l.Info("shown")
		if !strings.HasPrefix(b.String(), tc.want) || !strings.Contains(b.String(), "shown") {
			t.Errorf("%+v wrote %q, want it to start with %q", tc.log, b.String(), tc.want)
		}
		if tc.skip != "" && strings.Contains(b.String(), tc.skip) {
			t.Errorf("%+v wrote %q below its level", tc.log, b.String())
		}
	}
}

func TestValidateBoot(t *testing.T) {
	base := func() *Config {
		c := Defaults()
		c.Region.ID, c.Region.DataDir, c.Region.CentralPublicKey = "room-1", "/var/tms", "/etc/tms/central.pub"
		c.Region.Listen = netip.MustParseAddrPort("10.0.5.2:8081")
		c.Region.Boot.Enabled = true
		c.Region.Boot.Interface, c.Region.Boot.Address = "enp3s0", "10.0.5.2"
		c.Region.Temporal.Insecure = true
		return c
	}
	if err := base().Validate(RoleRegion); err != nil {
		t.Fatalf("proxy mode: %v", err)
	}
	for _, tc := range []struct {
		edit func(*Boot)
		want string
	}{
		{func(b *Boot) { b.Interface = "" }, "region.boot.interface: is required"},
		{func(b *Boot) { b.Address = "fe80::1" }, `region.boot.address: "fe80::1" is not an IPv4 address`},
		{func(b *Boot) { b.DHCP = "auto" }, `region.boot.dhcp: "auto" is not proxy, full or off`},
		{func(b *Boot) { b.DHCP = "full" }, "region.boot.pool: is required"},
		{func(b *Boot) { b.DHCP, b.Pool, b.Subnet = "full", "10.0.5.200-10.0.5.100", "10.0.5.0/24" }, "ends before it starts"},
		{func(b *Boot) { b.DHCP, b.Pool, b.Subnet = "full", "10.0.6.1-10.0.6.9", "10.0.5.0/24" }, "is not inside region.boot.subnet"},
		{func(b *Boot) { b.DNS = "10.0.5.1,dns.example" }, `region.boot.dns: "dns.example" is not an IPv4 address`},
		{func(b *Boot) { b.DHCPAllow = []string{"52:54:00:*", "52:54:00"} }, `region.boot.dhcp_allow: "52:54:00" is not a MAC (aa:bb:cc:dd:ee:ff), a MAC prefix (52:54:00:*) or *`},
		{func(b *Boot) { b.DHCPAllow = []string{"enrolled"} }, `region.boot.dhcp_allow: "enrolled" is not a MAC`},
		{func(b *Boot) { b.DHCPUnknownPerMAC = 0 }, `region.boot.dhcp_unknown_per_mac: "0" is not a whole number between 1 and 120`},
		{func(b *Boot) { b.DHCPUnknownTotal = -5 }, `region.boot.dhcp_unknown_total: "-5" is not a whole number between 1 and 60`},
		{func(b *Boot) { b.WakeTimeout = time.Second }, `region.boot.wake_timeout: "1s" is not a duration between 10s and 1h`},
		{func(b *Boot) { b.DHCPUnknownTotal = 61 }, `region.boot.dhcp_unknown_total: "61" is not a whole number between 1 and 60`},
		{func(b *Boot) { b.ClaimQuiet = -time.Second }, `region.boot.claim_quiet: "-1s" is not a duration between 0s and 1h`},
		{func(b *Boot) { b.WakeTimeout = 2 * time.Hour }, `region.boot.wake_timeout: "2h0m0s" is not a duration between 10s and 1h`},
	} {
		c := base()
		tc.edit(&c.Region.Boot)
		err := c.Validate(RoleRegion)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", c.Region.Boot, err, tc.want)
		}
	}
	st, err := Boot{Address: "10.0.5.2", Pool: "10.0.5.100-10.0.5.199", Subnet: "10.0.5.7/24", DNS: "1.1.1.1, 9.9.9.9"}.Settings()
	if err != nil || st.Subnet.String() != "10.0.5.0/24" || len(st.DNS) != 2 || st.PoolEnd.String() != "10.0.5.199" {
		t.Fatalf("settings %+v, %v", st, err)
	}
	st, err = Boot{DHCPAllow: []string{"52:54:00:*", "AA-BB-CC-DD-EE-FF"}}.Settings()
	if err != nil || st.DHCPAllowAll || len(st.DHCPAllow) != 2 || st.DHCPAllow[0].String() != "52:54:00" ||
		st.DHCPAllow[1].String() != "aa:bb:cc:dd:ee:ff" {
		t.Fatalf("dhcp_allow settings %+v, %v", st, err)
	}
	if st, err = (Boot{DHCPAllow: []string{"*"}}).Settings(); err != nil || !st.DHCPAllowAll {
		t.Fatalf("dhcp_allow *: %+v, %v", st, err)
	}
}

func TestParseMACPattern(t *testing.T) {
	for _, tc := range []struct {
		in     string
		prefix string // as net.HardwareAddr.String; "" with all or an error
		all    bool
		ok     bool
	}{
		{"aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff", false, true},
		{" AA-BB-CC-DD-EE-FF ", "aa:bb:cc:dd:ee:ff", false, true},
		{"52:54:00:*", "52:54:00", false, true},
		{"52-54-*", "52:54", false, true},
		{"02:*", "02", false, true},
		{"aa:bb:cc:dd:ee:*", "aa:bb:cc:dd:ee", false, true},
		{"*", "", true, true},
		{"", "", false, false},
		{":*", "", false, false},
		{"aa:bb:cc:dd:ee:ff:*", "", false, false},     // a whole MAC is not a prefix
		{"aa:bb:cc:dd:ee:ff:00:11", "", false, false}, // 8 bytes
		{"52:54:00", "", false, false},                // a prefix needs its *
		{"52:54:00*", "", false, false},
		{"52:5:00:*", "", false, false},
		{"52:54-00:*", "", false, false},
		{"gg:bb:cc:dd:ee:ff", "", false, false},
		{"+a:bb:cc:dd:ee:ff", "", false, false},
		{"aabb.ccdd.eeff", "", false, false},
		{"*:*", "", false, false},
	} {
		prefix, all, err := ParseMACPattern(tc.in)
		if (err == nil) != tc.ok || all != tc.all || prefix.String() != tc.prefix {
			t.Errorf("ParseMACPattern(%q) = %q, %v, %v; want %q, %v, ok %v", tc.in, prefix, all, err, tc.prefix, tc.all, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(tc.in)) {
			t.Errorf("error %v does not quote the entry", err)
		}
	}
}

// FuzzParseMACPattern: whatever an admin writes, ParseMACPattern does not
// panic, and what it accepts is 1 to 6 bytes that print back to a pattern
// it accepts as the same.
func FuzzParseMACPattern(f *testing.F) {
	for _, s := range []string{"aa:bb:cc:dd:ee:ff", "52:54:00:*", "*", "52-54-*", "", "52:54:00", "aa:bb:cc:dd:ee:ff:*", "ff:*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		prefix, all, err := ParseMACPattern(s)
		if err != nil || all {
			if prefix != nil {
				t.Fatalf("%q: prefix %v with all %v, err %v", s, prefix, all, err)
			}
			return
		}
		if len(prefix) == 0 || len(prefix) > 6 {
			t.Fatalf("%q: %d bytes", s, len(prefix))
		}
		back := prefix.String()
		if len(prefix) < 6 {
			back += ":*"
		}
		again, _, err := ParseMACPattern(back)
		if err != nil || !bytes.Equal(again, prefix) {
			t.Fatalf("%q parsed to %v, which reads back as %v, %v", s, prefix, again, err)
		}
	})
}

func TestDHCPAllowFromFile(t *testing.T) {
	for _, tc := range []struct{ name, file string }{
		{"yaml.yaml", "region:\n  boot:\n    dhcp_allow: [52:54:00:12:34:56, \"52:54:01:*\"]\n"},
		{"toml.toml", "[region.boot]\ndhcp_allow = [\"52:54:00:12:34:56\", \"52:54:01:*\"]\n"},
	} {
		path := filepath.Join(t.TempDir(), tc.name)
		if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(LoadOptions{File: path, Env: env(nil), Role: RoleCLI})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := cfg.Region.Boot.DHCPAllow; !slices.Equal(got, []string{"52:54:00:12:34:56", "52:54:01:*"}) {
			t.Errorf("%s: dhcp_allow %q", tc.name, got)
		}
	}
}

// TestReplacedGrantKeysFail checks that a configuration still setting the shared grant key of an
// earlier tms fails, saying what replaces it, from a file and from the environment alike.
func TestReplacedGrantKeysFail(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts LoadOptions
		key  string
		want string
	}{
		{name: "central key in a file", opts: LoadOptions{File: writeFile(t, "c.yaml", "central:\n  grant_key_file: /etc/tms/grant.key\n"), Env: env(nil)},
			key: "central.grant_key_file", want: "central.signing_key_file"},
		{name: "region key in a file", opts: LoadOptions{File: writeFile(t, "r.yaml", "region:\n  grant_key_file: /etc/tms/grant.key\n"), Env: env(nil)},
			key: "region.grant_key_file", want: "region.central_public_key"},
		{name: "region key in the environment", opts: LoadOptions{Env: env(map[string]string{"TMS_REGION_GRANT_KEY_FILE": "/k"})},
			key: "region.grant_key_file", want: "region.central_public_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Role = RoleCLI
			_, err := Load(tc.opts)
			if err == nil {
				t.Fatal("loaded")
			}
			if got := fieldKeys(t, err); !slices.Equal(got, []string{tc.key}) || !strings.Contains(err.Error(), "replaced by "+tc.want) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// TestCentralPublicKeyIsChecked checks that a public key given inline is parsed when the
// configuration is loaded, and that a file name is left for the program to read.
func TestCentralPublicKeyIsChecked(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{name: "file name", value: "/etc/tms/central.pub", ok: true},
		{name: "inline key", value: "tms-ed25519:" + strings.Repeat("A", 43) + "=", ok: true},
		{name: "inline key too short", value: "tms-ed25519:AAAA"},
		{name: "inline key not base64", value: "tms-ed25519:!!!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			c.Region.CentralPublicKey = tc.value
			err := c.Validate(RoleCLI)
			if tc.ok != (err == nil) {
				t.Fatalf("Validate = %v", err)
			}
			if err != nil && !slices.Equal(fieldKeys(t, err), []string{"region.central_public_key"}) {
				t.Fatalf("Validate = %v", err)
			}
		})
	}
}

func TestRegionZone(t *testing.T) {
	if z := (Region{Timezone: "Asia/Tokyo"}).Zone(); z != "Asia/Tokyo" {
		t.Errorf("Zone with region.timezone = %q", z)
	}
	t.Setenv("TZ", "America/Sao_Paulo")
	if z := (Region{}).Zone(); z != "America/Sao_Paulo" {
		t.Errorf("Zone without region.timezone, TZ set = %q", z)
	}
	t.Setenv("TZ", "Nowhere/Special")
	if _, err := time.LoadLocation((Region{}).Zone()); err != nil {
		t.Errorf("Zone with a TZ that names no zone: %v", err)
	}
}

func TestStoreCapacityBytes(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "2GiB": 2 << 30, "500MB": 500e6, "lots": 0} {
		if got := (Region{StoreCapacity: in}).StoreCapacityBytes(); got != want {
			t.Errorf("StoreCapacityBytes(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestRegionWANRateValues(t *testing.T) {
	r := Region{WANRate: "160Mbit/s", WANRateWindows: "16:00-08:00=50MB/s, 8:00-16:00=5MB/s"}
	if got := r.WANRateBytes(); got != 20_000_000 {
		t.Errorf("WANRateBytes = %d; want 20000000", got)
	}
	if got := r.WANWindows(); got != "08:00-16:00=5MB/s,16:00-08:00=50MB/s" {
		t.Errorf("WANWindows = %q", got)
	}
	if (Region{}).WANRateBytes() != 0 || (Region{}).WANWindows() != "" || (Region{WANRate: "off", WANRateWindows: "none"}).WANWindows() != "" {
		t.Error("no cap and no windows are not zero values")
	}
}
