// Package netlab builds a classroom out of Linux network namespaces, for the benchmarks and
// end-to-end tests that run real tms processes over a real, shaped network on one machine.
//
//	lab, err := netlab.New(ctx, netlab.Options{Hosts: 11}) // the region and ten terminals
//	defer lab.Close()
//	err = lab.Shape(ctx, 16_000_000)                        // every port: 16 Mbit/s each way
//	cmd := lab.Command(ctx, 3, "tms-agent", "--region", "http://"+lab.Hosts[0].Addr.String()+":8301", …)
//	c, err := lab.Counters(ctx, 0)                          // the region's bytes sent and received
//
// Design. A lab named tmslab-PID (the creating process's id) is K+1 namespaces: tmslab-PID-br
// holds the switch, a bridge br0 (no STP, no forwarding delay, no address), and each host i
// (0…K-1) is a namespace tmslab-PID-hI with loopback up and one interface, eth0, addressed
// 10.98.0.(I+1)/24. eth0 is one end of a veth pair whose other end, pI, is a port of br0 in the
// switch's namespace. Host 0 is meant for the region (10.98.0.1), the others for terminals.
// Nothing is routed out of 10.98.0.0/24 and no namespace has another interface, so nothing
// leaves the lab.
//
// Shape puts a token bucket (tc tbf) on both ends of every veth at the same rate: the egress of
// the switch-side end pI is what host I can download, the egress of eth0 what it can upload, so
// each host sits behind its own full-duplex link of that rate, as a PC on a switch port does.
// The switch itself is unlimited (a kernel bridge), as a classroom switch's backplane nearly is.
// The machine moves about 1 Gbit/s in total through namespaces, so labs run at scaled-down rates
// (10–20 Mbit/s a port) and compare ratios, never absolute times, with real classrooms.
//
// Processes join a host by `ip netns exec` (Command). A process cannot move its own goroutines
// between namespaces safely (setns acts on one OS thread), so a program that must run inside a
// host — the region — runs itself again there (see e2e/doc.go and bench/swarm), and reconstructs
// the lab's description with Attach.
//
// Close deletes every namespace (their interfaces and qdiscs go with them). A killed run leaves
// its lab behind; RemoveStale deletes labs whose creating process is gone, and New calls it.
package netlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// DefaultPrefix starts the name of every lab's namespaces.
const DefaultPrefix = "tmslab-"

// Subnet is the lab's segment; host i is Subnet's address i+1.
var Subnet = netip.MustParsePrefix("10.98.0.0/24")

// MaxHosts is how many hosts a lab can hold: the /24 less the network and broadcast addresses.
const MaxHosts = 253

// HostIf is each host's interface.
const HostIf = "eth0"

// Options describe a lab.
type Options struct {
	// Hosts is the number of host namespaces (1…MaxHosts).
	Hosts int
	// Prefix names the lab's namespaces (default DefaultPrefix); the lab is Prefix+PID.
	Prefix string
}

// Lab is a bridge namespace with host namespaces on it.
type Lab struct {
	Name   string // Prefix+PID
	Bridge string // the namespace holding br0
	Hosts  []Host
	// rate is the shaping rate in bit/s, 0 if unshaped.
	rate int64
}

// Host is one namespace on the lab's bridge.
type Host struct {
	NS   string     // its namespace
	Addr netip.Addr // eth0's address
	Port string     // the switch-side end of its veth, in the bridge namespace
}

// New creates a lab of o.Hosts hosts. It first removes labs with o.Prefix that killed runs left
// behind. On error, what was created is deleted again.
func New(ctx context.Context, o Options) (_ *Lab, err error) {
	if o.Hosts < 1 || o.Hosts > MaxHosts {
		return nil, fmt.Errorf("netlab: %d hosts: want 1 to %d", o.Hosts, MaxHosts)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if _, err := RemoveStale(ctx, o.Prefix); err != nil {
		return nil, err
	}
	l := Attach(o.Prefix+strconv.Itoa(os.Getpid()), o.Hosts)
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if err := ip(ctx, "netns", "add", l.Bridge); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"-n", l.Bridge, "link", "set", "lo", "up"},
		{"-n", l.Bridge, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"},
		{"-n", l.Bridge, "link", "set", "br0", "up"},
	}
	for _, h := range l.Hosts {
		if err := ip(ctx, "netns", "add", h.NS); err != nil {
			return nil, err
		}
		steps = append(steps,
			[]string{"-n", l.Bridge, "link", "add", h.Port, "type", "veth", "peer", "name", HostIf, "netns", h.NS},
			[]string{"-n", l.Bridge, "link", "set", h.Port, "master", "br0"},
			[]string{"-n", l.Bridge, "link", "set", h.Port, "up"},
			[]string{"-n", h.NS, "link", "set", "lo", "up"},
			[]string{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr, Subnet.Bits()).String(), "dev", HostIf},
			[]string{"-n", h.NS, "link", "set", HostIf, "up"},
		)
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return nil, err
		}
	}
	// No IPv6 on the segment: its router solicitations and DAD would add bytes to the
	// counters nobody asked for. Best effort: a kernel without IPv6 has nothing to switch off.
	for _, ns := range l.namespaces() {
		_ = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1").Run()
	}
	return l, nil
}

// Attach describes the lab called name with hosts hosts, as New made it, without creating
// anything: for a process that runs inside one of its hosts.
func Attach(name string, hosts int) *Lab {
	l := &Lab{Name: name, Bridge: name + "-br"}
	a := Subnet.Addr()
	for i := range hosts {
		a = a.Next()
		l.Hosts = append(l.Hosts, Host{NS: fmt.Sprintf("%s-h%d", name, i), Addr: a, Port: fmt.Sprintf("p%d", i)})
	}
	return l
}

func (l *Lab) namespaces() []string {
	ns := []string{l.Bridge}
	for _, h := range l.Hosts {
		ns = append(ns, h.NS)
	}
	return ns
}

// Shape limits every host's link to bitsPerSecond each way: a tbf qdisc on both ends of every
// veth. Calling it again changes the rate.
func (l *Lab) Shape(ctx context.Context, bitsPerSecond int64) error {
	if bitsPerSecond < 8000 {
		return fmt.Errorf("netlab: rate %d bit/s: want at least 8 kbit/s", bitsPerSecond)
	}
	// The bucket holds 10 ms of the rate, at least 32 KiB: smaller buckets cost TCP throughput
	// (and tbf splits GSO packets larger than the bucket); the queue holds 100 ms more.
	burst := max(bitsPerSecond/8/100, 32<<10)
	args := func(ns, dev string) []string {
		return []string{"-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
			"rate", strconv.FormatInt(bitsPerSecond, 10) + "bit", "burst", strconv.FormatInt(burst, 10), "latency", "100ms"}
	}
	for _, h := range l.Hosts {
		for _, a := range [][]string{args(l.Bridge, h.Port), args(h.NS, HostIf)} {
			if out, err := exec.CommandContext(ctx, "tc", a...).CombinedOutput(); err != nil {
				return fmt.Errorf("netlab: tc %s: %w: %s", strings.Join(a, " "), err, strings.TrimSpace(string(out)))
			}
		}
	}
	l.rate = bitsPerSecond
	return nil
}

// Rate is the rate Shape set, in bit/s; 0 if the lab is not shaped.
func (l *Lab) Rate() int64 { return l.rate }

// Command returns a command that runs name in host i's namespace.
func (l *Lab) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.Hosts[i].NS, name}, args...)...)
}

// Counters are an interface's byte counters since it was created.
type Counters struct {
	TxBytes, RxBytes int64
}

// Counters reads host i's eth0 counters: TxBytes is what the host sent into the lab, RxBytes
// what it received.
func (l *Lab) Counters(ctx context.Context, i int) (Counters, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", l.Hosts[i].NS, "-s", "-j", "link", "show", "dev", HostIf).Output()
	if err != nil {
		return Counters{}, fmt.Errorf("netlab: counters of %s in %s: %w", HostIf, l.Hosts[i].NS, err)
	}
	return parseCounters(out)
}

// parseCounters reads the stats64 of `ip -s -j link show dev X`.
func parseCounters(out []byte) (Counters, error) {
	var links []struct {
		Stats64 *struct {
			RX struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
			TX struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return Counters{}, fmt.Errorf("netlab: ip -s -j link: %w", err)
	}
	if len(links) != 1 || links[0].Stats64 == nil {
		return Counters{}, fmt.Errorf("netlab: ip -s -j link gave %d links without stats64", len(links))
	}
	s := links[0].Stats64
	return Counters{TxBytes: s.TX.Bytes, RxBytes: s.RX.Bytes}, nil
}

// Close deletes the lab's namespaces; it returns the first failure but tries them all.
func (l *Lab) Close() error {
	var first error
	for _, ns := range l.namespaces() {
		if _, err := os.Stat("/run/netns/" + ns); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := ip(context.Background(), "netns", "del", ns); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// RemoveStale deletes the namespaces of labs named prefix+PID whose process PID is gone (a
// killed run runs no cleanup), and returns their names.
func RemoveStale(ctx context.Context, prefix string) ([]string, error) {
	ents, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		pid, ok := labPID(e.Name(), prefix)
		if !ok || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue // not a lab, or its process still runs
		}
		if err := ip(ctx, "netns", "del", e.Name()); err != nil {
			return removed, err
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// labPID returns the PID in a namespace name prefix+PID or prefix+PID-suffix.
func labPID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0 && strconv.Itoa(pid) == digits
}

func ip(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("netlab: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ParseRate reads a rate as tc writes it: a number and a unit bit, kbit, mbit or gbit (decimal
// multiples), for example 16mbit. It returns bit/s.
func ParseRate(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	num := s
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"bit", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	if num == s {
		return 0, fmt.Errorf("rate %q: want a number and bit, kbit, mbit or gbit, for example 16mbit", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || !(f > 0 && f*float64(mult) <= 100e9) {
		return 0, fmt.Errorf("rate %q: want a positive number up to 100gbit, for example 16mbit", s)
	}
	return int64(f * float64(mult)), nil
}
