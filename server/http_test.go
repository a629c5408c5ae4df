package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/agentapi"
	"tms/agentwire"
	"tms/bootsvc"
	"tms/config"
	"tms/devtemporal"
	"tms/internal/pgtest"
	"tms/server"
	"tms/signing"
	"tms/state"
	"tms/transfer"
)

// testCA makes a CA and a certificate it signs for 127.0.0.1, as PEM files in dir.
func testCA(t *testing.T, dir string) (pool *x509.CertPool, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tms test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "region"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "region.pem"), filepath.Join(dir, "region.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}

// temporalClient starts an in-process Temporal server for the test and returns a client of it.
func temporalClient(t *testing.T) client.Client {
	t.Helper()
	tsrv, err := devtemporal.Start(devtemporal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tsrv.Stop)
	c, err := client.Dial(client.Options{HostPort: tsrv.Address()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestRegionHTTPS starts a region with a certificate, connection caps and short deadlines,
// and reaches it as agents and hostile hosts would.
func TestRegionHTTPS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := temporalClient(t)
	key, kerr := signing.GenerateKey()
	if kerr != nil {
		t.Fatal(kerr)
	}
	pool, certFile, keyFile := testCA(t, t.TempDir())

	const idle = 500 * time.Millisecond
	const perIP = 4
	tlsOpts := config.ServerTLS{CertFile: certFile, KeyFile: keyFile}
	r, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-tls", DataDir: t.TempDir(), Database: pgtest.StateFor(t), CentralKey: key.Public(), Client: c,
		NoRegister: true, TLS: tlsOpts, HTTP: config.RegionHTTP{MaxConnsPerIP: perIP, MaxConns: 100}, HTTPIdle: idle})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	if !strings.HasPrefix(r.Endpoint(), "https://127.0.0.1:") {
		t.Fatalf("endpoint %s, want https://127.0.0.1:...", r.Endpoint())
	}
	addr := strings.TrimPrefix(r.Endpoint(), "https://")
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	defer trusting.CloseIdleConnections()

	t.Run("an agent that trusts the CA boots", func(t *testing.T) {
		body, _ := json.Marshal(agentwire.BootRequest{MAC: "52:54:00:12:34:56", Disk: "/dev/sda", DiskSize: 1 << 30})
		resp, err := trusting.Post(r.Endpoint()+"/v1/agent/boot", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep agentwire.BootReply
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil || resp.StatusCode != http.StatusOK || rep.Action != "local" {
			t.Fatalf("boot: %s, %+v, %v", resp.Status, rep, err)
		}
		if resp.TLS == nil || resp.ProtoMajor != 1 {
			t.Errorf("answered over %s, TLS %v: want HTTP/1.1 over TLS", resp.Proto, resp.TLS != nil)
		}
	})
	t.Run("a client without the CA refuses the region", func(t *testing.T) {
		cl := &http.Client{Timeout: 10 * time.Second}
		_, err := cl.Get(r.Endpoint() + "/v1/agent/task")
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) {
			t.Fatalf("GET without the CA: %v; want an unknown authority", err)
		}
	})
	t.Run("plain HTTP gets no agent API", func(t *testing.T) {
		cl := &http.Client{Timeout: 10 * time.Second}
		resp, err := cl.Get("http://" + addr + "/v1/agent/task")
		if err != nil {
			return // refused outright: fine
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %s", resp.Status)
		}
	})
	t.Run("a client that stalls mid-body is cut off", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/agent/boot HTTP/1.1\r\nHost: region\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mac\":")
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(idle + 5*time.Second))
		_, err = io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %s", time.Since(start))
		}
		if took := time.Since(start); took < idle/2 {
			t.Fatalf("cut off after %s, before the deadline of %s", took, idle)
		}
	})
	t.Run("connections over the per-address cap are closed", func(t *testing.T) {
		trusting.CloseIdleConnections()
		time.Sleep(100 * time.Millisecond) // the server sees the closes
		var open []*tls.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for i := range perIP {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
			if err != nil {
				t.Fatalf("connection %d of %d: %v", i+1, perIP, err)
			}
			open = append(open, conn)
		}
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
		if err == nil {
			conn.Close()
			t.Fatalf("connection %d accepted; the cap is %d", perIP+1, perIP)
		}
		open[0].Close()
		time.Sleep(100 * time.Millisecond)
		conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatalf("after one closed: %v", err)
		}
		open = append(open, conn)
	})
}

// TestRegionTLSWithBootService: with a certificate, iPXE still gets its script and the
// in-memory OS over plain HTTP on a listener of their own, and the script sends the agent to the
// HTTPS endpoint.
func TestRegionTLSWithBootService(t *testing.T) {
	ctx := context.Background()
	key, kerr := signing.GenerateKey()
	if kerr != nil {
		t.Fatal(kerr)
	}
	_, certFile, keyFile := testCA(t, t.TempDir())
	c := temporalClient(t)
	ipxe := t.TempDir()
	os.WriteFile(filepath.Join(ipxe, "undionly.kpxe"), []byte("iPXE"), 0o644)
	r, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-boot", DataDir: t.TempDir(), Database: pgtest.StateFor(t), CentralKey: key.Public(), Client: c,
		NoRegister: true, TLS: config.ServerTLS{CertFile: certFile, KeyFile: keyFile}, BootHTTPListen: "127.0.0.1:0",
		Boot:      config.Boot{Enabled: true, Address: "127.0.0.1", DHCP: "off", TFTPDir: ipxe, KernelArgs: "console=ttyS0"},
		BootPorts: &bootsvc.ServiceOptions{TFTPPort: freeUDPPort(t), ListenIP: netip.MustParseAddr("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(ctx)
	const mac = "52:54:00:12:34:57"
	r.Inventory.Enroll(ctx, mac, "pc7")
	r.Inventory.StartTask(ctx, state.Task{ID: "capture/lab-boot/pc7/lab@1", MAC: mac, Kind: "capture", Image: "lab"}, time.Now())
	r.Inventory.SetBootAction(ctx, mac, state.BootAction{Action: "capture", Task: "capture/lab-boot/pc7/lab@1", Image: "lab", Expires: time.Now().Add(time.Hour)})
	scriptURL := r.Boot.Scripts.ScriptURL(mustMAC(mac))
	if !strings.HasPrefix(scriptURL, "http://127.0.0.1:") {
		t.Fatalf("script URL %s: want plain HTTP", scriptURL)
	}
	resp, err := http.Get(scriptURL)
	if err != nil {
		t.Fatal(err)
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	base, _, _ := strings.Cut(scriptURL, "/boot/")
	if !bytes.Contains(script, []byte("kernel "+base+"/boot/vmlinuz")) || !bytes.Contains(script, []byte("tms.region="+r.Endpoint()+" ")) ||
		!strings.HasPrefix(r.Endpoint(), "https://") {
		t.Fatalf("script:\n%s\nwant boot files from %s and the agent sent to %s", script, base, r.Endpoint())
	}
	// The plain listener serves the boot files only, never the agent API.
	resp, err = http.Post(base+"/v1/agent/boot", "application/json", strings.NewReader(`{"mac":"`+mac+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("agent API on the plain boot listener: %d", resp.StatusCode)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func mustMAC(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

func TestRegionBadCertificate(t *testing.T) {
	key, kerr := signing.GenerateKey()
	if kerr != nil {
		t.Fatal(kerr)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.pem"), []byte("not a certificate"), 0o644)
	c, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = server.StartRegion(context.Background(), server.RegionOptions{ID: "lab-bad", DataDir: t.TempDir(), Database: pgtest.StateFor(t), CentralKey: key.Public(), Client: c,
		NoRegister: true, TLS: config.ServerTLS{CertFile: filepath.Join(dir, "bad.pem"), KeyFile: filepath.Join(dir, "bad.pem")}})
	if err == nil || !strings.Contains(err.Error(), "region.tls") {
		t.Fatalf("a bad certificate: %v", err)
	}
}

// TestDeadlinesByRoute checks that the routes which move images and boot files get stream
// deadlines and every other route the short ones, on the region's real routes.
func TestDeadlinesByRoute(t *testing.T) {
	mux := http.NewServeMux()
	(&transfer.Handler{}).Routes(mux)
	(&agentapi.Server{}).Routes(mux)
	(&bootsvc.Scripts{}).Routes(mux)
	limits := server.Deadlines(mux, 0)
	id := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		method, path string
		stream       bool
	}{
		{"GET", "/v1/versions/" + id + "/manifest", true},
		{"GET", "/v1/versions/" + id + "/chunks/" + id, true},
		{"GET", "/v1/agent/task/manifest", true},
		{"GET", "/v1/agent/task/chunks/" + id, true},
		{"POST", "/v1/agent/task/frames", true},
		{"POST", "/v1/agent/task/chunks", true},
		{"PUT", "/v1/agent/task/manifest", true},
		{"GET", "/boot/vmlinuz", true},
		{"GET", "/boot/initrd", true},
		{"GET", "/boot/ipxe", false},
		{"POST", "/v1/agent/boot", false},
		{"GET", "/v1/agent/commands", false},
		{"GET", "/v1/agent/task", false},
		{"POST", "/v1/agent/task/missing", false},
		{"POST", "/v1/agent/task/progress", false},
		{"POST", "/v1/agent/task/done", false},
		{"GET", "/no/such/route", false},
		{"DELETE", "/v1/agent/task/chunks", false},
	} {
		l := limits(httptest.NewRequest(tc.method, tc.path, nil))
		if stream := l.Body == 0; stream != tc.stream || l.Idle != server.DefaultHTTPIdle {
			t.Errorf("%s %s: limits %+v, want stream %v", tc.method, tc.path, l, tc.stream)
		}
	}
}
