package dhcpd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Mode says whether the server hands out addresses.
type Mode string

const (
	// ModeProxy answers PXE clients only, with boot options and no address
	// (proxyDHCP): the school's own DHCP server keeps handing out addresses.
	ModeProxy Mode = "proxy"
	// ModeFull runs a complete DHCP server with an address pool, for
	// isolated labs without a DHCP server of their own.
	ModeFull Mode = "full"
)

// Arch is a client system architecture, the value of option 93
// (RFC 4578 section 2.1).
type Arch uint16

// The architectures that classroom PCs boot as.
const (
	ArchBIOS     Arch = 0  // Intel x86PC: legacy BIOS PXE ROM
	ArchEFIx64   Arch = 7  // EFI x86-64
	ArchEFIBC    Arch = 9  // EFI byte code; in practice x86-64 firmware
	ArchEFIARM64 Arch = 11 // EFI ARM64
)

// DefaultBootFiles are the iPXE binaries served over TFTP when Config.BootFiles
// does not name one for an architecture.
var defaultBootFiles = map[Arch]string{
	ArchBIOS:     "undionly.kpxe",
	ArchEFIx64:   "ipxe.efi",
	ArchEFIBC:    "ipxe.efi",
	ArchEFIARM64: "ipxe-arm64.efi",
}

// DefaultBootFiles returns a copy of the built-in boot file table.
func DefaultBootFiles() map[Arch]string {
	m := make(map[Arch]string, len(defaultBootFiles))
	for a, f := range defaultBootFiles {
		m[a] = f
	}
	return m
}

// Pool is an inclusive range of addresses that full mode hands out.
type Pool struct {
	Start, End netip.Addr
}

// Config configures a Server.
type Config struct {
	Mode Mode
	// ServerIP is this server's address on the terminals' segment: the
	// TFTP next-server (siaddr) and the DHCP server identifier (option 54).
	ServerIP netip.Addr
	// Interface binds the sockets to one interface (SO_BINDTODEVICE), so a
	// region serves only its own segment. Empty binds to all interfaces,
	// which suits tests only: broadcasts then leave by the routing table.
	Interface string
	// BootFiles maps an architecture to the TFTP path of its iPXE binary.
	// Entries override DefaultBootFiles; an empty name removes one.
	BootFiles map[Arch]string
	// ScriptURL returns the HTTP URL of a terminal's iPXE script. It is
	// called once per answer to an iPXE client, because the region mints a
	// per-boot secret inside it. Required.
	ScriptURL func(mac net.HardwareAddr) string
	// Seen is told about every PXE client, enrolled or not, with the
	// address it has or is given (zero if unknown). Optional.
	Seen func(mac net.HardwareAddr, ip netip.Addr)

	// Admission: full mode leases only to admitted MACs, and both modes
	// rate-limit the requests of the others (see UnknownPerMAC). A MAC is
	// admitted if AllowAll is set, if it starts with an entry of Allow, or
	// if Admit says so.
	//
	// Admit reports whether mac belongs to an enrolled terminal; an error
	// means it could not tell: full mode then drops the request, proxy mode
	// answers it as from a MAC that is not admitted. It is called
	// for requests that Allow does not admit, so it must be quick (a
	// database lookup by key). Optional; nil admits nobody.
	Admit func(mac net.HardwareAddr) (bool, error)
	// Allow are MACs (6 bytes) or MAC prefixes (1 to 5 bytes, such as
	// 52:54:00 for QEMU's PCs) admitted besides enrolled terminals.
	Allow []net.HardwareAddr
	// AllowAll admits every MAC: any PC on the segment gets a lease, as
	// before admission existed.
	AllowAll bool
	// UnknownPerMAC is how many requests a minute one MAC that is not
	// admitted may send (DefaultUnknownPerMAC if zero); UnknownTotal how
	// many a second all of them together may send (DefaultUnknownTotal if
	// zero). What exceeds them is dropped unanswered.
	UnknownPerMAC, UnknownTotal int

	// Answer, in proxy mode, reports whether this server answers mac's
	// network boot: a region's servers all hear a PC's DHCPDISCOVER and
	// only the one chosen for it (package choose) answers. It is asked
	// after admission (the rate limits) and before any other work, so it
	// must be quick and must not block (a cached view, never a database
	// query). Nil answers every MAC. Full mode does not ask it: leases are
	// the server's own.
	Answer func(mac net.HardwareAddr) bool

	// Full mode only.
	Pool      Pool
	Netmask   net.IPMask
	Router    netip.Addr   // option 3; omitted if invalid
	DNS       []netip.Addr // option 6; omitted if empty
	LeaseTime time.Duration
	// LeaseFile keeps leases across restarts; it is rewritten atomically
	// after every change. Empty keeps leases in memory only.
	LeaseFile string

	// ListenIP is the address the sockets bind to; the zero value binds to
	// 0.0.0.0, which a DHCP server needs to receive broadcasts.
	ListenIP netip.Addr
	// Port is the DHCP server port, 67 if zero. ProxyPort is the PXE boot
	// server port that proxy mode also listens on, 4011 if zero. Tests use
	// high ports on 127.0.0.1.
	Port, ProxyPort int

	Log *slog.Logger
	// Meter, if set, counts requests by result (metrics.DHCP*): the region's metrics.
	Meter Meter
}

// Meter counts DHCP requests by result (package metrics's Region).
type Meter interface {
	DHCPRequest(result string)
}

const (
	defaultLeaseTime = time.Hour
	maxPoolSize      = 1 << 16
)

// withDefaults validates c and fills in what it leaves out. Errors name the
// field so an admin can fix the configuration.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("dhcp %s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch c.Mode {
	case ModeProxy, ModeFull:
	default:
		bad("mode", "%q is neither %q nor %q", c.Mode, ModeProxy, ModeFull)
	}
	if !c.ServerIP.Is4() {
		bad("server_ip", "%v is not an IPv4 address", c.ServerIP)
	}
	if c.ScriptURL == nil {
		bad("script_url", "missing")
	}
	boot := DefaultBootFiles()
	for a, f := range c.BootFiles {
		if f == "" {
			delete(boot, a)
		} else if len(f) > 127 {
			bad("boot_files", "%q is longer than the 127 bytes of the DHCP file field", f)
		} else {
			boot[a] = f
		}
	}
	c.BootFiles = boot
	for _, p := range c.Allow {
		if len(p) == 0 || len(p) > 6 {
			bad("allow", "%q is neither a MAC nor a MAC prefix", p.String())
		}
	}
	if c.UnknownPerMAC < 0 {
		bad("unknown_per_mac", "%d is negative", c.UnknownPerMAC)
	}
	if c.UnknownTotal < 0 {
		bad("unknown_total", "%d is negative", c.UnknownTotal)
	}
	if c.UnknownPerMAC == 0 {
		c.UnknownPerMAC = DefaultUnknownPerMAC
	}
	if c.UnknownTotal == 0 {
		c.UnknownTotal = DefaultUnknownTotal
	}
	if c.Mode == ModeFull {
		c.checkPool(bad)
		if c.Admit == nil && len(c.Allow) == 0 && !c.AllowAll {
			bad("admit", "full mode without Admit, Allow or AllowAll would lease to nobody")
		}
		if c.LeaseTime == 0 {
			c.LeaseTime = defaultLeaseTime
		}
		if c.LeaseTime < time.Minute {
			bad("lease_time", "%v is shorter than a minute", c.LeaseTime)
		}
		for _, d := range c.DNS {
			if !d.Is4() {
				bad("dns", "%v is not an IPv4 address", d)
			}
		}
	}
	if !c.ListenIP.IsValid() {
		c.ListenIP = netip.IPv4Unspecified()
	}
	if c.Port == 0 {
		c.Port = 67
	}
	if c.ProxyPort == 0 {
		c.ProxyPort = 4011
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, errors.Join(errs...)
}

func (c *Config) checkPool(bad func(field, format string, args ...any)) {
	ones, bits := c.Netmask.Size()
	if bits != 32 || ones == 0 || ones > 30 {
		bad("netmask", "%v is not an IPv4 netmask of /1 to /30", c.Netmask)
		return
	}
	p := c.Pool
	if !p.Start.Is4() || !p.End.Is4() || p.End.Less(p.Start) {
		bad("pool", "%v-%v is not an IPv4 range", p.Start, p.End)
		return
	}
	if !c.ServerIP.Is4() {
		return
	}
	subnet := netip.PrefixFrom(c.ServerIP, ones).Masked()
	if !subnet.Contains(p.Start) || !subnet.Contains(p.End) {
		bad("pool", "%v-%v is outside the server's subnet %v", p.Start, p.End, subnet)
	}
	if poolSize(p) > maxPoolSize {
		bad("pool", "%v-%v holds more than %d addresses", p.Start, p.End, maxPoolSize)
	}
	if c.Router.IsValid() && !subnet.Contains(c.Router) {
		bad("router", "%v is outside the server's subnet %v", c.Router, subnet)
	}
}

func poolSize(p Pool) int {
	s, e := p.Start.As4(), p.End.As4()
	return int(be32(e)-be32(s)) + 1
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func (p Pool) contains(a netip.Addr) bool {
	return a.Is4() && !a.Less(p.Start) && !p.End.Less(a)
}
