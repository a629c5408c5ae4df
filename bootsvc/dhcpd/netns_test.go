//go:build linux

package dhcpd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sys/unix"

	"tms/internal/logbuf"
)

// The test's segment: the regional server in one namespace, a classroom PC
// in the other, a veth pair between them. Nothing reaches a real interface.
const (
	nsPrefix  = "tmsdhcp-"
	serverIf  = "tmsdhcp-srv"
	clientIf  = "tmsdhcp-pc"
	clientMAC = "02:77:00:00:00:02"
	pxeMAC    = "02:77:00:00:00:99" // pxeDiscoverInNetns
)

// TestRealClient runs busybox udhcpc, a real DHCP client, against the
// server: full mode must give it an address and the boot file, honour its
// RELEASE, and give nothing to a MAC that is not enrolled; proxy mode must
// give it nothing, while a PXE DISCOVER still gets its proxy offer.
func TestRealClient(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run: sudo go test ./bootsvc/dhcpd -run TestRealClient)")
	}
	for _, tool := range []string{"ip", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian: iproute2, busybox-static): %v", tool, err)
		}
	}
	if out, err := exec.Command("busybox", "udhcpc", "--help").CombinedOutput(); !bytes.Contains(out, []byte("udhcpc")) {
		t.Skipf("busybox has no udhcpc: %v", err)
	}
	removeStaleNamespaces(t)

	for _, mode := range []Mode{ModeFull, ModeProxy} {
		t.Run(string(mode), func(t *testing.T) {
			srvNS, cliNS := vethPair(t)
			var r recorder
			cfg := proxyConfig(&r)
			if mode == ModeFull {
				cfg = fullConfig(&r)
				cfg.AllowAll = false
				enrolled := map[string]bool{clientMAC: true, pxeMAC: true}
				cfg.Admit = func(hw net.HardwareAddr) (bool, error) { return enrolled[hw.String()], nil }
			}
			cfg.Interface = serverIf
			s := serveInNetns(t, srvNS, cfg)

			// A PXE DISCOVER from the PC's segment, sent from Go; it
			// also waits until the server is up.
			offer := pxeDiscoverInNetns(t, cliNS)
			if offer.BootFileName != "undionly.kpxe" || !offer.ServerIPAddr.Equal(net.IPv4(10, 77, 0, 1)) {
				t.Fatalf("offer to a PXE DISCOVER:\n%s", offer.Summary())
			}
			if mode == ModeProxy && !offer.YourIPAddr.IsUnspecified() {
				t.Fatalf("proxy offered an address:\n%s", offer.Summary())
			}

			env, err := udhcpc(t, cliNS, mode == ModeFull)
			switch mode {
			case ModeFull:
				if err != nil {
					t.Fatalf("udhcpc got no lease: %v\n%s", err, env["output"])
				}
				// udhcpc -R released it from its own address on exit.
				var l lease
				released := false
				for deadline := time.Now().Add(2 * time.Second); !released && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					s.mu.Lock()
					if p := s.leases.byMAC[clientMAC]; p != nil {
						l = *p
						released = !l.Expires.After(time.Now())
					}
					s.mu.Unlock()
				}
				if !released || s.Stats().ReleaseIgnored != 0 {
					t.Fatalf("udhcpc's RELEASE not honoured: lease %+v, stats %+v\n%s", l, s.Stats(), env["output"])
				}
				ip, perr := netip.ParseAddr(env["ip"])
				if perr != nil || !cfg.Pool.contains(ip) {
					t.Fatalf("udhcpc got address %q, want one in %v-%v\n%s", env["ip"], cfg.Pool.Start, cfg.Pool.End, env["output"])
				}
				if env["boot_file"] != "undionly.kpxe" || env["siaddr"] != "10.77.0.1" {
					t.Fatalf("udhcpc got boot_file %q from %q\n%s", env["boot_file"], env["siaddr"], env["output"])
				}
				// The same PC with a MAC that is not enrolled gets nothing,
				// and is recorded as seen for the admin to enroll.
				const stranger = "02:77:00:00:00:55"
				ipCmd(t, "-n", cliNS, "link", "set", clientIf, "down")
				ipCmd(t, "-n", cliNS, "addr", "flush", "dev", clientIf)
				ipCmd(t, "-n", cliNS, "link", "set", clientIf, "address", stranger)
				ipCmd(t, "-n", cliNS, "link", "set", clientIf, "up")
				if env, err := udhcpc(t, cliNS, false); err == nil || env["event"] == "bound" {
					t.Fatalf("udhcpc with a MAC that is not enrolled got a lease\n%s", env["output"])
				}
				r.mu.Lock()
				_, heard := r.seen[stranger]
				r.mu.Unlock()
				s.mu.Lock()
				_, leased := s.leases.byMAC[stranger]
				s.mu.Unlock()
				if !heard || leased || s.Stats().Refused == 0 {
					t.Fatalf("stranger seen %v, leased %v, stats %+v", heard, leased, s.Stats())
				}
			case ModeProxy:
				if err == nil || env["event"] == "bound" {
					t.Fatalf("udhcpc got a lease from a proxy\n%s", env["output"])
				}
				// It was heard, recorded, and left alone.
				r.mu.Lock()
				_, heard := r.seen[clientMAC]
				r.mu.Unlock()
				if !heard {
					t.Fatalf("the proxy never saw udhcpc's requests\n%s", env["output"])
				}
			}
		})
	}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// vethPair creates two namespaces joined by a veth pair: 10.77.0.1/24 on
// the server's end, no address on the PC's. They are deleted when the test
// ends, whether it passes or not.
func vethPair(t *testing.T) (srvNS, cliNS string) {
	t.Helper()
	id := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	srvNS, cliNS = nsPrefix+id+"-srv", nsPrefix+id+"-pc"
	for _, ns := range []string{srvNS, cliNS} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Skipf("cannot create a network namespace here: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v\n%s", ns, err, out)
			}
		})
	}
	ipCmd(t, "link", "add", serverIf, "netns", srvNS, "type", "veth", "peer", "name", clientIf, "netns", cliNS)
	ipCmd(t, "-n", cliNS, "link", "set", clientIf, "address", clientMAC)
	ipCmd(t, "-n", srvNS, "addr", "add", "10.77.0.1/24", "dev", serverIf)
	for _, l := range [][2]string{{srvNS, serverIf}, {srvNS, "lo"}, {cliNS, clientIf}, {cliNS, "lo"}} {
		ipCmd(t, "-n", l[0], "link", "set", l[1], "up")
	}
	return srvNS, cliNS
}

// removeStaleNamespaces deletes what a killed run of this test left behind:
// a timed-out test binary runs no cleanups.
func removeStaleNamespaces(t *testing.T) {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // not ours, or its test still runs
		}
		t.Logf("removing namespace %s left by a killed run", e.Name())
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// inNetns runs fn on an OS thread moved into namespace ns. Sockets fn opens
// stay in ns. The thread is discarded afterwards, never reused elsewhere.
func inNetns(ns string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		fn()
		errc <- nil
	}()
	return <-errc
}

// serveInNetns runs the server in ns until the test ends.
func serveInNetns(t *testing.T, ns string, cfg Config) *Server {
	t.Helper()
	s := newServer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		if err := inNetns(ns, func() { done <- s.Serve(ctx) }); err != nil {
			done <- err
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != context.Canceled {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not stop")
		}
	})
	return s
}

// pxeDiscoverInNetns broadcasts a BIOS PXE ROM's DISCOVER on the PC's
// segment and returns the first offer.
func pxeDiscoverInNetns(t *testing.T, ns string) *dhcpv4.DHCPv4 {
	t.Helper()
	var conn net.PacketConn
	var err error
	if nerr := inNetns(ns, func() {
		conn, err = server4.NewIPv4UDPConn(clientIf, &net.UDPAddr{Port: dhcpv4.ClientPort})
	}); nerr != nil {
		t.Fatal(nerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hw, _ := net.ParseMAC(pxeMAC)
	req := discover(t, hw, append(kinds[0].mods, func(d *dhcpv4.DHCPv4) { d.SetBroadcast() })...)
	to := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	buf := make([]byte, 1500)
	for try := 0; try < 20; try++ {
		if _, err := conn.WriteTo(req.ToBytes(), to); err != nil {
			t.Fatalf("send DISCOVER in %s: %v", ns, err)
		}
		conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				break
			}
			if reply, err := dhcpv4.FromBytes(buf[:n]); err == nil && reply.TransactionID == req.TransactionID &&
				reply.MessageType() == dhcpv4.MessageTypeOffer {
				return reply
			}
		}
	}
	t.Fatal("no offer to a PXE DISCOVER")
	return nil
}

// udhcpc runs busybox's DHCP client in ns as a BIOS PXE ROM would identify
// itself, with a script that prints what it was given. env holds the
// script's variables on "bound", "event" the last event, "output" all. With
// release, the script puts the address on the interface, and udhcpc stays
// until it is bound, then is stopped and releases the lease from that
// address as it exits (-R; with -q it would quit before it counts as bound
// and send no RELEASE).
func udhcpc(t *testing.T, ns string, release bool) (map[string]string, error) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	body := "#!/bin/sh\necho \"event=$1\"\n[ \"$1\" = bound ] && env\n"
	if release {
		body += "[ \"$1\" = bound ] && ip addr add \"$ip/$mask\" dev \"$interface\"\n"
	}
	if err := os.WriteFile(script, []byte(body+"exit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"netns", "exec", ns,
		"busybox", "udhcpc", "-i", clientIf, "-n", "-f", "-t", "3", "-T", "1",
		"-V", "PXEClient:Arch:00000:UNDI:002001", "-s", script}
	if release {
		args = append(args, "-R")
	} else {
		args = append(args, "-q")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // the script prints only what udhcpc sets
	var buf logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Start()
	if err == nil && release {
		for !strings.Contains(buf.String(), "event=bound") && ctx.Err() == nil && !strings.Contains(buf.String(), "no lease") {
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGTERM)
	}
	if err == nil {
		err = cmd.Wait()
	}
	if release && strings.Contains(buf.String(), "event=bound") {
		err = nil // stopped on purpose
	}
	out := []byte(buf.String())
	env := map[string]string{"output": string(out)}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env, err
}
