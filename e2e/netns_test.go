//go:build netboot

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The lab segment every VM of the test is on.
const (
	nsPrefix   = "tmse2e-"
	bridge     = "br0"
	regionIP   = "10.99.0.1"
	regionCIDR = regionIP + "/24"
)

// segment is a network namespace with a bridge and tap devices on it, and a second namespace,
// PC, that stands for a PC on the segment: its interface pc0 is a veth whose peer is on br0.
type segment struct {
	NS   string
	Taps []string
	PC   string
}

// pcIf is the stand-in PC's interface in namespace segment.PC.
const pcIf = "pc0"

// newSegment creates namespace tmse2e-PID with br0 (10.99.0.1/24, up, no STP delay), loopback
// up, and taps tap0…tapN-1 on br0. It is deleted when the test ends, pass or fail.
func newSegment(t *testing.T, taps int) *segment {
	t.Helper()
	removeStaleNamespaces(t)
	s := &segment{NS: fmt.Sprintf("%s%d", nsPrefix, os.Getpid())}
	if out, err := exec.Command("ip", "netns", "add", s.NS).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: %v\n%s", err, out)
	}
	t.Cleanup(func() { s.delete(t) })
	ipCmd(t, "-n", s.NS, "link", "set", "lo", "up")
	ipCmd(t, "-n", s.NS, "link", "add", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
	ipCmd(t, "-n", s.NS, "addr", "add", regionCIDR, "dev", bridge)
	ipCmd(t, "-n", s.NS, "link", "set", bridge, "up")
	for i := range taps {
		tap := fmt.Sprintf("tap%d", i)
		ipCmd(t, "-n", s.NS, "tuntap", "add", "dev", tap, "mode", "tap")
		ipCmd(t, "-n", s.NS, "link", "set", tap, "master", bridge)
		ipCmd(t, "-n", s.NS, "link", "set", tap, "up")
		s.Taps = append(s.Taps, tap)
	}
	s.PC = s.NS + "-pc"
	if out, err := exec.Command("ip", "netns", "add", s.PC).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", s.PC, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", s.PC).CombinedOutput(); err != nil {
			t.Errorf("delete namespace %s: %v\n%s", s.PC, err, out)
		}
	})
	ipCmd(t, "-n", s.NS, "link", "add", pcIf+"-br", "type", "veth", "peer", "name", pcIf, "netns", s.PC)
	ipCmd(t, "-n", s.NS, "link", "set", pcIf+"-br", "master", bridge)
	ipCmd(t, "-n", s.NS, "link", "set", pcIf+"-br", "up")
	ipCmd(t, "-n", s.PC, "link", "set", "lo", "up")
	ipCmd(t, "-n", s.PC, "link", "set", pcIf, "up")
	return s
}

// delete removes the namespace; its bridge and taps go with it.
func (s *segment) delete(t *testing.T) {
	if out, err := exec.Command("ip", "netns", "del", s.NS).CombinedOutput(); err != nil {
		t.Errorf("delete namespace %s: %v\n%s", s.NS, err, out)
	}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// removeStaleNamespaces deletes what a killed run left behind: a timed-out or killed test
// binary runs no cleanups. A namespace is stale when the process named in it is gone.
func removeStaleNamespaces(t *testing.T) {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSuffix(rest, "-pc"))
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // not ours, or its test still runs
		}
		t.Logf("removing namespace %s left by a killed run", e.Name())
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// needRoot skips the test unless it can create namespaces and run ip.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run: sudo scripts/test-netboot)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs ip (Debian: iproute2): %v", err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun for the terminals' tap devices: %v", err)
	}
}

// TestSegment creates the lab segment, checks its devices are there and up, and that it is gone
// after teardown.
func TestSegment(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("runs in the parent only")
	}
	needRoot(t)
	var s *segment
	t.Run("create", func(t *testing.T) {
		s = newSegment(t, 2)
		out, err := exec.Command("ip", "-n", s.NS, "-br", "addr", "show", "dev", bridge).CombinedOutput()
		if err != nil || !strings.Contains(string(out), regionCIDR) {
			t.Fatalf("br0 in %s has no %s: %v\n%s", s.NS, regionCIDR, err, out)
		}
		for _, tap := range s.Taps {
			out, err := exec.Command("ip", "-n", s.NS, "-d", "link", "show", "dev", tap).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "master "+bridge) || !strings.Contains(string(out), "tun type tap") {
				t.Fatalf("%s in %s is not a tap on %s: %v\n%s", tap, s.NS, bridge, err, out)
			}
		}
		out, err = exec.Command("ip", "-n", s.NS, "-d", "link", "show", "dev", pcIf+"-br").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "master "+bridge) {
			t.Fatalf("the stand-in PC's veth is not on %s: %v\n%s", bridge, err, out)
		}
		if out, err := exec.Command("ip", "-n", s.PC, "link", "show", "dev", pcIf).CombinedOutput(); err != nil {
			t.Fatalf("%s has no %s: %v\n%s", s.PC, pcIf, err, out)
		}
	})
	if s == nil {
		return
	}
	for _, ns := range []string{s.NS, s.PC} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Fatalf("namespace %s is still there after its test ended", ns)
		}
	}
}
