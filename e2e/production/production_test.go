// Package production tests the production shape of docs/deploy.md on one machine: the example
// files in dist/config run as written, with only their addresses, ports, paths and TLS changed
// for loopback. Temporal is tms-temporal on PostgreSQL (its schema made by tms-temporal
// sql-tool), central's store is a real MinIO server, central's catalog and the region's
// inventory are PostgreSQL databases, and the region has two servers. Every server is a real
// process of the binaries an admin installs.
package production

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	"tms/auth"
	"tms/internal/miniotest"
	"tms/internal/pgtest"
	"tms/server"
	"tms/signing"
	"tms/workers"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	miniotest.StopShared()
	os.Exit(code)
}

// namespace is the Temporal namespace of the example files.
const namespace = "tms"

func TestProductionShape(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tms and tms-temporal and starts a whole site (about a minute)")
	}
	pg := pgtest.Shared(t)
	minio := miniotest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := buildBinaries(t, dir)
	site := &site{t: t, dir: dir, bin: bin}
	defer site.stop()

	// Central's key first: tms-temporal's authorizer checks tokens with its public key.
	pubFile := filepath.Join(dir, "central.pub")
	keyFile := filepath.Join(dir, "central.key")
	out := site.tms(ctx, nil, "central", "init", "--key", keyFile)
	if err := os.WriteFile(pubFile, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := signing.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	// Temporal on PostgreSQL, as docs/deploy.md makes it.
	host, port := hostPort(t, pg.DSN("postgres"))
	for _, s := range []struct{ db, schema string }{{"temporal", "postgresql/v12/temporal"}, {"temporal_visibility", "postgresql/v12/visibility"}} {
		base := []string{"sql-tool", "--plugin", "postgres12", "--ep", host, "-p", port, "-u", "postgres", "--db", s.db}
		site.run(ctx, bin.temporal, append(base, "create"))
		site.run(ctx, bin.temporal, append(base, "setup-schema", "-v", "0.0"))
		site.run(ctx, bin.temporal, append(base, "update-schema", "--schema-name", s.schema))
	}
	temporalDir := filepath.Join(dir, "temporal")
	frontend := renderTemporal(t, temporalDir, host+":"+port)
	site.start("temporal", bin.temporal, []string{"--config-dir", temporalDir, "--env", "production", "--central-public-key", pubFile}, nil)
	admin := adminClient(ctx, t, frontend, key)
	defer admin.Close()

	// Central: its catalog in PostgreSQL, its store in MinIO.
	bucket := minio.NewBucket(t)
	centralDB := pg.NewDatabase(t)
	centralListen := freeAddr(t)
	centralCfg := renderYAML(t, "central.yaml", filepath.Join(dir, "central.yaml"), map[string]any{
		"log.format":                "text",
		"store.s3.endpoint":         "http://" + minio.Endpoint,
		"central.temporal.address":  frontend,
		"central.temporal.tls":      nil,
		"central.temporal.insecure": true, // loopback
		"central.store":             "s3://" + bucket + "/central",
		"central.database":          centralDB,
		"central.data_dir":          filepath.Join(dir, "central"),
		"central.signing_key_file":  keyFile,
		"central.listen":            centralListen,
		"central.tls":               nil,
	})
	s3env := []string{"TMS_STORE_S3_ACCESS_KEY=" + minio.AccessKey, "TMS_STORE_S3_SECRET_KEY=" + minio.SecretKey}
	password := site.firstAdmin(ctx, centralCfg)
	site.start("central", bin.tms, []string{"central", "--config", centralCfg}, s3env)
	waitHTTP(ctx, t, "http://"+centralListen+"/healthz")

	// The admin logs in and mints the region's worker token, as docs/security.md says.
	cli := []string{"--config", centralCfg}
	site.tmsIn(ctx, strings.NewReader(password+"\n"), cli, "login", "admin", "--password-stdin", "--central", "http://"+centralListen)
	regionToken := strings.TrimSpace(site.tms(ctx, cli, "region", "token", "room-12", "--expires", "1h"))

	// Two servers of room-12 share its inventory in PostgreSQL.
	regionDB := pg.NewDatabase(t)
	for _, s := range []struct{ id, room string }{{"room-12-a", "12a"}, {"room-12-b", "12b"}} {
		listen := freeAddr(t)
		cfg := renderYAML(t, "region.yaml", filepath.Join(dir, s.id+".yaml"), map[string]any{
			"log.format":                "text",
			"store.s3.endpoint":         "http://" + minio.Endpoint,
			"region.server_id":          s.id,
			"region.server_labels":      map[string]any{"room": s.room},
			"region.temporal.address":   frontend,
			"region.temporal.tls":       nil,
			"region.temporal.insecure":  true,
			"region.temporal.api_key":   regionToken,
			"region.database":           regionDB,
			"region.data_dir":           filepath.Join(dir, s.id),
			"region.listen":             listen,
			"region.endpoint":           "http://" + listen,
			"region.tls":                nil,
			"region.central_public_key": pubFile,
			"region.relay":              "s3://" + bucket + "/central",
			"region.boot":               nil, // no terminals' interface here: the namespace tests boot PCs
		})
		site.start(s.id, bin.tms, []string{"region", "--config", cfg}, s3env)
	}

	// Central sees the region and both its servers.
	var regions []struct {
		ID      string `json:"id"`
		Servers []struct {
			ID      string `json:"id"`
			Version string `json:"version"`
			Healthy bool   `json:"healthy"`
		} `json:"servers"`
	}
	deadline := time.Now().Add(time.Minute)
	for {
		regions = nil
		if err := json.Unmarshal([]byte(site.tms(ctx, cli, "region", "ls", "--json")), &regions); err != nil {
			t.Fatal(err)
		}
		healthy := 0
		for _, r := range regions {
			for _, s := range r.Servers {
				if r.ID == "room-12" && s.Healthy {
					healthy++
				}
			}
		}
		if healthy == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("central does not see both servers of room-12 healthy: %+v", regions)
		}
		time.Sleep(time.Second)
	}
	t.Logf("tms status:\n%s", site.tms(ctx, cli, "status"))
}

// binaries are the programs an admin installs.
type binaries struct{ tms, temporal string }

func buildBinaries(t *testing.T, dir string) binaries {
	t.Helper()
	b := binaries{tms: filepath.Join(dir, "tms"), temporal: filepath.Join(dir, "tms-temporal")}
	for out, pkg := range map[string]string{b.tms: "tms/cmd/tms", b.temporal: "tms/cmd/tms-temporal"} {
		if o, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, o)
		}
	}
	return b
}

// site runs the site's processes and the admin's commands.
type site struct {
	t   *testing.T
	dir string
	bin binaries

	mu    sync.Mutex
	procs []*exec.Cmd
}

// run runs a command to its end; it must succeed.
func (s *site) run(ctx context.Context, bin string, args []string) string {
	s.t.Helper()
	return s.runIn(ctx, nil, nil, bin, args)
}

func (s *site) runIn(ctx context.Context, stdin *strings.Reader, env []string, bin string, args []string) string {
	s.t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(s.dir, "home")), env...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// tms runs a tms command with cli's flags (a configuration file) first.
func (s *site) tms(ctx context.Context, cli []string, args ...string) string {
	s.t.Helper()
	return s.runIn(ctx, nil, nil, s.bin.tms, append(append([]string(nil), cli...), args...))
}

func (s *site) tmsIn(ctx context.Context, stdin *strings.Reader, cli []string, args ...string) string {
	s.t.Helper()
	return s.runIn(ctx, stdin, nil, s.bin.tms, append(append([]string(nil), cli...), args...))
}

// firstAdmin runs tms central init against the catalog in cfg, which makes the first admin
// and prints its password once.
func (s *site) firstAdmin(ctx context.Context, cfg string) string {
	s.t.Helper()
	out := s.tms(ctx, nil, "central", "init", "--config", cfg, "--admin", "admin")
	m := regexp.MustCompile(`(?m)^first admin: admin, password: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		s.t.Fatalf("tms central init made no first admin:\n%s", out)
	}
	return m[1]
}

// start starts a long-running process; its output goes to dir/NAME.log, which the test shows
// if it fails.
func (s *site) start(name, bin string, args, env []string) {
	s.t.Helper()
	logPath := filepath.Join(s.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(s.dir, "home")), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.procs = append(s.procs, cmd)
	s.mu.Unlock()
	s.t.Cleanup(func() {
		logf.Close()
		if s.t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				s.t.Logf("--- %s:\n%s", name, tail(b, 60))
			}
		}
	})
}

// stop stops the processes, the last started first, as an admin's systemctl stop would.
func (s *site) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

func tail(b []byte, lines int) string {
	var all []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		all = append(all, sc.Text())
	}
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// renderTemporal writes dist/config/temporal/production.yaml to dir with the database at db and
// free loopback ports, and returns the frontend's address.
func renderTemporal(t *testing.T, dir, db string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "dist", "config", "temporal", "production.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "db.school.lan:5432", db)
	s = strings.ReplaceAll(s, "user: temporal", "user: postgres")
	s = strings.ReplaceAll(s, "bindOnIP: 0.0.0.0", "bindOnLocalHost: true")
	// Temporal keeps membership ports in a smallint: free ports below 32768.
	ports := map[string]string{}
	s = regexp.MustCompile(`\b(7233|7234|7235|7236|7239|7243|6933|6934|6935|6936|6939)\b`).ReplaceAllStringFunc(s, func(p string) string {
		if ports[p] == "" {
			ports[p] = strconv.Itoa(freeLowPort(t))
		}
		return ports[p]
	})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "production.yaml"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + ports["7233"]
}

// adminClient waits for the frontend and, as an admin with the temporal CLI would
// (docs/deploy.md), creates the namespace and tms's search attributes.
func adminClient(ctx context.Context, t *testing.T, frontend string, key *signing.PrivateKey) client.Client {
	t.Helper()
	tok, _, err := auth.Mint(key, auth.Claims{Subject: "admin", Role: auth.RoleAdmin}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	o := client.Options{HostPort: frontend, Namespace: namespace}
	workers.Bearer(&o, func(context.Context) (string, error) { return tok, nil })
	var nc client.NamespaceClient
	deadline := time.Now().Add(time.Minute)
	for {
		if nc, err = client.NewNamespaceClient(o); err == nil {
			err = nc.Register(ctx, &workflowservice.RegisterNamespaceRequest{Namespace: namespace,
				WorkflowExecutionRetentionPeriod: durationpb.New(72 * time.Hour)})
			nc.Close()
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registering namespace %s at %s: %v", namespace, frontend, err)
		}
		time.Sleep(time.Second)
	}
	c, err := client.Dial(o)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if err = server.EnsureSearchAttributes(ctx, c, namespace); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			c.Close()
			t.Fatalf("search attributes: %v", err)
		}
		time.Sleep(time.Second)
	}
}

// renderYAML writes dist/config/NAME to path with the keys (dotted paths) set, or removed where
// the value is nil, and returns path.
func renderYAML(t *testing.T, name, path string, set map[string]any) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "dist", "config", name))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for k, v := range set {
		keys := strings.Split(k, ".")
		m := doc
		for _, p := range keys[:len(keys)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		if v == nil {
			delete(m, keys[len(keys)-1])
		} else {
			m[keys[len(keys)-1]] = v
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func hostPort(t *testing.T, dsn string) (string, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), u.Port()
}

// freeLowPort is a free loopback TCP port between 20000 and 32767.
func freeLowPort(t *testing.T) int {
	t.Helper()
	for range 1000 {
		p := 20000 + mrand.IntN(12768)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port below 32768")
	return 0
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHTTP(ctx context.Context, t *testing.T, u string) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer: %v", u, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
