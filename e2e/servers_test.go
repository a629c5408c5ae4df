//go:build netboot

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tms/internal/classroom"
	"tms/internal/netlab"
	"tms/internal/pgtest"
	"tms/internal/pxeprobe"
	"tms/internal/sampledisk"
	"tms/server"
	"tms/state"
	"tms/workflows"
)

// The lab of the two-server test: host 0 runs Temporal, central, PostgreSQL and the region's
// first server (room a); hosts 1–4 are terminals, two in each room; host 5 runs the region's
// second server (room b) as a tms region process of its own.
const (
	twoRooms      = 4
	serverBHost   = twoRooms + 1
	twoRoomsDisk  = 16 << 20
	twoRoomsRate  = 100_000_000
	twoRoomsTries = 3
)

// roomOf is the room of terminal lab-pcN: 1 and 2 in room a, 3 and 4 in room b.
func roomOf(n int) string {
	if n <= twoRooms/2 {
		return "a"
	}
	return "b"
}

// TestPXEProbe is the network boot probe the two-server test runs in a terminal's host; it
// does nothing otherwise.
func TestPXEProbe(t *testing.T) {
	ran, err := pxeprobe.Child(context.Background())
	if !ran {
		t.Skip("runs as a terminal's boot probe only")
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestTwoServersTwoRooms runs one region on two servers in a lab of network namespaces: both
// share the region's PostgreSQL inventory and task queue, each has its own store and boot
// service (proxyDHCP on the same segment). Terminals are in two rooms (groups labelled room=a
// and room=b, the servers likewise): each terminal's network boot is answered by its room's
// server only, and its agent works with that server. Then a deploy to all four, and the second
// server killed (SIGKILL) mid-deploy: its terminals' agents carry on with the first server,
// the deploy finishes, every disk is the image, and its terminals then boot from the first.
func TestTwoServersTwoRooms(t *testing.T) {
	spec, child, err := classroom.ChildSpec()
	if err != nil {
		t.Fatal(err)
	}
	if child {
		twoServersScenario(t, spec)
		return
	}
	if os.Getenv(pxeprobe.ChildEnv) != "" {
		t.Skip("runs as the probe only")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run: sudo scripts/test-netboot)")
	}
	for _, c := range []string{"ip", "tc", "go"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s (Debian: iproute2; go to build tms): %v", c, err)
		}
	}
	pgtest.Binaries(t) // skips, saying why, without PostgreSQL's binaries
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := classroom.Prepare(ctx, classroom.PrepareOptions{Terminals: twoRooms, Extra: 1, Rate: twoRoomsRate, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "tms"), "tms/cmd/tms").CombinedOutput(); err != nil {
		t.Fatalf("go build tms: %v\n%s", err, out)
	}
	if err := s.RunChild(ctx, "-test.run=^TestTwoServersTwoRooms$", "-test.v", "-test.timeout=8m"); err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*", "logs", "*.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				t.Logf("%s:\n%s", filepath.Base(l), b)
			}
		}
		t.Fatalf("the two-server lab %s failed: %v", s.Lab.Name, err)
	}
}

// twoServersScenario runs in host 0.
func twoServersScenario(t *testing.T, spec classroom.Spec) {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	lab := netlab.Attach(spec.Lab, spec.Hosts)
	hostA, hostB := lab.Hosts[0].Addr, lab.Hosts[serverBHost].Addr

	// The region's PostgreSQL, on host 0's lab address so the second server reaches it.
	pg := pgtest.StartAt(t, hostA.String(), netlab.Subnet.String())
	db := pg.NewDatabase(t)

	const heartbeat = time.Second
	c, err := classroom.Start(ctx, classroom.Options{Spec: spec, Terminals: twoRooms, DiskSize: twoRoomsDisk, Name: "rooms",
		Probe: []string{"-test.run=^TestPXEProbe$"},
		Region: func(o *server.RegionOptions) {
			o.Database = db
			o.ServerID, o.ServerLabels, o.Heartbeat = "lab-a", map[string]string{"room": "a"}, heartbeat
			o.Boot.Enabled, o.Boot.Interface, o.Boot.Address, o.Boot.DHCP = true, netlab.HostIf, hostA.String(), "proxy"
			o.Boot.ClaimQuiet = time.Second
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	inv := c.Env.Regions[classroom.Region].Inventory
	for _, room := range []string{"a", "b"} {
		var members []string
		for i, n := range c.Names() {
			if roomOf(i+1) == room {
				members = append(members, n)
			}
		}
		if err := inv.CreateGroup(ctx, "room-"+room); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.SetGroupLabels(ctx, "room-"+room, state.LabelChange{Set: map[string]string{"room": room}}); err != nil {
			t.Fatal(err)
		}
		if err := inv.AddToGroup(ctx, "room-"+room, members...); err != nil {
			t.Fatal(err)
		}
	}

	// Wake-on-LAN. The first server's magic packets reach the simulated terminals directly (devenv's
	// wake port); the second server broadcasts real ones on the segment, which a relay on host 0
	// passes to the same port (the terminals are processes: no NIC of theirs listens).
	relayMagic(ctx, t, c.Env.WakeTarget(classroom.Region))

	// The second server: the tms region an admin runs, on host 5.
	b := startServerB(ctx, t, spec, lab, c, db, hostB, heartbeat)
	defer b.stop()
	waitServers(ctx, t, inv, 2, state.StaleAfter(heartbeat))

	src := filepath.Join(spec.Dir, "rooms.raw")
	if err := sampledisk.Write(src, sampledisk.Options{Size: twoRoomsDisk, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	img, err := c.Import(ctx, src, "lab") // into the first server's store only
	if err != nil {
		t.Fatal(err)
	}
	names := c.Names()
	timeouts := workflows.AgentTimeouts{Silence: 20 * time.Second, Tries: twoRoomsTries, Total: 5 * time.Minute}
	d, err := c.StartDeploy(ctx, classroom.DeployOptions{Image: "lab", Terminals: names, Timeouts: timeouts})
	if err != nil {
		t.Fatal(err)
	}
	roomB := names[twoRooms/2:]
	if err := d.WaitProgress(ctx, roomB, 0.3); err != nil {
		t.Fatal(err)
	}
	// Each terminal's boot into this deploy was answered by its room's server alone.
	for i, n := range names {
		boots := c.Boots(n)
		if len(boots) == 0 {
			t.Fatalf("%s never booted from the network", n)
		}
		last := boots[len(boots)-1]
		want := hostA
		if roomOf(i+1) == "b" {
			want = hostB
		}
		if len(last.Offers) != 1 || last.Offers[0].Server != want || !last.Task {
			t.Fatalf("%s (room %s): want one offer, from %s, with its task; got %+v", n, roomOf(i+1), want, last)
		}
	}
	b.kill()
	t.Logf("killed the room b server at %v", time.Since(d.Start).Round(time.Millisecond))
	run, err := d.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if run.Result.Failed != 0 {
		t.Fatalf("deploy with a server killed: %+v", run.Result.Terminals)
	}
	if err := c.CheckDisks(img, names); err != nil {
		t.Fatal(err)
	}
	t.Logf("the deploy finished at %v", run.Last.Sub(run.Start).Round(time.Millisecond))

	// With the second server gone, the first answers room b's terminals too.
	time.Sleep(4 * heartbeat)
	for _, n := range roomB {
		b, err := c.Probe(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Offers) != 1 || b.Offers[0].Server != hostA {
			t.Fatalf("%s after its server died: want one offer, from %s; got %+v", n, hostA, b.Offers)
		}
	}
}

// relayMagic passes every magic packet broadcast on the segment (UDP port 9) to target.
func relayMagic(ctx context.Context, t *testing.T, target netip.AddrPort) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "0.0.0.0:9")
	if err != nil {
		t.Fatal(err)
	}
	out, err := net.Dial("udp4", target.String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	go func() {
		<-ctx.Done()
		pc.Close()
		out.Close()
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			out.Write(buf[:n])
		}
	}()
}

// serverB is the second server's process.
type serverB struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *serverB) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

func (s *serverB) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.kill()
	}
}

// startServerB runs tms region in host serverBHost with the region's id, the shared database,
// its own store and its boot service on the lab's segment, as dist/config/region.yaml has it.
func startServerB(ctx context.Context, t *testing.T, spec classroom.Spec, lab *netlab.Lab, c *classroom.Classroom, db string,
	hostB netip.Addr, heartbeat time.Duration) *serverB {
	t.Helper()
	dir := filepath.Join(spec.Dir, "lab-b")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`log:
  level: info
region:
  id: %s
  server_id: lab-b
  server_labels:
    room: b
  heartbeat: %s
  temporal:
    address: %s
    insecure: true
  database: %s
  data_dir: %s
  listen: %s:8081
  endpoint: http://%s:8081
  central_public_key: %s
  boot:
    enabled: true
    interface: %s
    address: %s
    dhcp: proxy
    subnet: %s
    claim_quiet: 1s
`, classroom.Region, heartbeat, c.Env.TemporalAddress(), db, dir, hostB, hostB, c.Env.CentralKeyFile, netlab.HostIf, hostB, netlab.Subnet)
	file := filepath.Join(dir, "region.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(spec.Dir, "rooms", "logs", "server-lab-b.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := lab.Command(ctx, serverBHost, filepath.Join(filepath.Dir(spec.Agent), "tms"), "region", "--config", file)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &serverB{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(s.done) }()
	return s
}

// waitServers waits until the region's registry holds n healthy servers.
func waitServers(ctx context.Context, t *testing.T, inv *state.Inventory, n int, staleAfter time.Duration) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		list, err := inv.Servers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		healthy := 0
		var ids []string
		for _, s := range list {
			if s.Healthy(time.Now(), staleAfter) {
				healthy++
				ids = append(ids, s.ID)
			}
		}
		if healthy >= n {
			t.Logf("servers: %s", strings.Join(ids, ", "))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the region has %d healthy servers (%v), want %d", healthy, ids, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
