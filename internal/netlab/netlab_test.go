package netlab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveEnv makes the test binary a tiny HTTP server inside a host (TestShape): it serves
// GET /bytes?n=N with N zero bytes on the address the variable holds.
const serveEnv = "TMS_NETLAB_SERVE"

func TestMain(m *testing.M) {
	if addr := os.Getenv(serveEnv); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("ready")
		buf := make([]byte, 64<<10)
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			n = min(max(n, 0), 64<<20)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			for n > 0 {
				k, err := w.Write(buf[:min(n, int64(len(buf)))])
				if err != nil {
					return
				}
				n -= int64(k)
			}
		})}
		srv.Serve(ln)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "16mbit", want: 16e6},
		{in: "1.5Mbit", want: 1.5e6},
		{in: "800kbit", want: 800e3},
		{in: "1gbit", want: 1e9},
		{in: "9000bit", want: 9000},
		{in: " 20mbit ", want: 20e6},
		{in: "16", bad: true},
		{in: "16mb", bad: true},
		{in: "mbit", bad: true},
		{in: "-1mbit", bad: true},
		{in: "0mbit", bad: true},
		{in: "nanmbit", bad: true},
		{in: "infmbit", bad: true},
		{in: "200gbit", bad: true},
	} {
		got, err := ParseRate(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseRate(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestLabPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"tmslab-123-br", 123, true},
		{"tmslab-123-h7", 123, true},
		{"tmslab-123", 123, true},
		{"tmse2e-123", 0, false},
		{"tmslab-x-br", 0, false},
		{"tmslab--br", 0, false},
		{"tmslab-0123-br", 0, false},
		{"tmslab-0-br", 0, false},
	} {
		pid, ok := labPID(tc.name, DefaultPrefix)
		if pid != tc.pid && tc.ok || ok != tc.ok {
			t.Errorf("labPID(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}

func TestParseCounters(t *testing.T) {
	out := `[{"ifindex":2,"ifname":"eth0","stats64":{"rx":{"bytes":1234,"packets":3},"tx":{"bytes":5678,"packets":4}}}]`
	c, err := parseCounters([]byte(out))
	if err != nil || c != (Counters{TxBytes: 5678, RxBytes: 1234}) {
		t.Fatalf("parseCounters = %+v, %v", c, err)
	}
	for _, bad := range []string{``, `[]`, `[{"ifname":"eth0"}]`, `[{},{}]`, `{"stats64":{}}`} {
		if c, err := parseCounters([]byte(bad)); err == nil {
			t.Errorf("parseCounters(%q) = %+v, want an error", bad, c)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, c := range []string{"ip", "tc", "curl"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s (Debian: iproute2, curl): %v", c, err)
		}
	}
}

// TestShape builds a lab of three hosts, checks its addresses and qdiscs, and fetches bytes from
// a server in host 2 with curl in host 1: the transfer must take the shaped rate (not much more,
// not much less), the counters must have seen it, and the namespaces must be gone after Close.
func TestShape(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Hosts: 3, Prefix: "tmslabtest-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
		for _, ns := range l.namespaces() {
			if _, err := os.Stat("/run/netns/" + ns); err == nil {
				t.Errorf("namespace %s is still there after Close", ns)
			}
		}
	})
	const rate = 8_000_000
	if err := l.Shape(ctx, rate); err != nil {
		t.Fatal(err)
	}
	for i, h := range l.Hosts {
		out, err := exec.Command("ip", "-n", h.NS, "-br", "addr", "show", "dev", HostIf).CombinedOutput()
		if want := fmt.Sprintf("10.98.0.%d/24", i+1); err != nil || !strings.Contains(string(out), want) {
			t.Fatalf("host %d has no %s: %v\n%s", i, want, err, out)
		}
		for _, q := range [][2]string{{h.NS, HostIf}, {l.Bridge, h.Port}} {
			out, err := exec.Command("tc", "-n", q[0], "qdisc", "show", "dev", q[1]).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "tbf") || !strings.Contains(string(out), "rate 8Mbit") {
				t.Fatalf("%s in %s is not shaped at 8 Mbit/s: %v\n%s", q[1], q[0], err, out)
			}
		}
	}

	addr := l.Hosts[2].Addr.String() + ":8080"
	srv := l.Command(ctx, 2, os.Args[0], "-test.run=^$")
	srv.Env = append(os.Environ(), serveEnv+"="+addr)
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	ready := make([]byte, 6)
	if _, err := stdout.Read(ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("the server in host 2 did not start: %q, %v", ready, err)
	}

	before1, err := l.Counters(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	before2, err := l.Counters(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3 << 20 // 3 s at 8 Mbit/s
	start := time.Now()
	out, err := l.Command(ctx, 1, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
		fmt.Sprintf("http://%s/bytes?n=%d", addr, n)).CombinedOutput()
	took := time.Since(start)
	if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(n) {
		t.Fatalf("curl in host 1: %v: %s", err, out)
	}
	got := float64(n*8) / took.Seconds()
	t.Logf("%d bytes in %v: %.2f Mbit/s through an 8 Mbit/s link", n, took.Round(time.Millisecond), got/1e6)
	// TCP and IP headers take about 5%; startup and curl's own start a little time more.
	if got > rate*1.02 || got < rate*0.7 {
		t.Errorf("transfer at %.2f Mbit/s; the link is shaped at %.0f Mbit/s", got/1e6, float64(rate)/1e6)
	}
	after1, err := l.Counters(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	after2, err := l.Counters(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if d := after2.TxBytes - before2.TxBytes; d < n || d > n*11/10 {
		t.Errorf("host 2 sent %d bytes for a %d-byte download", d, n)
	}
	if d := after1.RxBytes - before1.RxBytes; d < n || d > n*11/10 {
		t.Errorf("host 1 received %d bytes for a %d-byte download", d, n)
	}
}

// TestRemoveStale checks that a lab whose process is gone is removed and one whose process runs
// is kept.
func TestRemoveStale(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	const prefix = "tmslabstale-"
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	deadNS := fmt.Sprintf("%s%d-br", prefix, dead.Process.Pid)
	liveNS := fmt.Sprintf("%s%d-br", prefix, live.Process.Pid)
	for _, ns := range []string{deadNS, liveNS} {
		if err := ip(ctx, "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	removed, err := RemoveStale(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != deadNS {
		t.Errorf("removed %v, want [%s]", removed, deadNS)
	}
	if _, err := os.Stat("/run/netns/" + deadNS); err == nil {
		t.Errorf("%s is still there", deadNS)
	}
	if _, err := os.Stat("/run/netns/" + liveNS); err != nil {
		t.Errorf("%s of a running process was removed: %v", liveNS, err)
	}
}
