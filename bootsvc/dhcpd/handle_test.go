package dhcpd

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var (
	serverIP  = netip.MustParseAddr("10.77.0.1")
	otherDHCP = net.IPv4(10, 77, 0, 254) // the school's DHCP server
)

// Requests as the clients of a classroom send them.
type clientKind struct {
	name string
	mods []dhcpv4.Modifier
	pxe  bool
	ipxe bool
	file string // what a firmware client boots; "" for iPXE and non-PXE
}

func archOpt(a Arch) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optClientArch), []byte{byte(a >> 8), byte(a)})
}

func vendorClass(s string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(s))
}

// pxeROMParams is the parameter request list of a PXE 2.1 ROM.
var pxeROMParams = params(1, 3, 43, 60, 66, 67, 128, 129)

var kinds = []clientKind{
	{name: "BIOS", pxe: true, file: "undionly.kpxe", mods: []dhcpv4.Modifier{
		vendorClass("PXEClient:Arch:00000:UNDI:002001"), archOpt(0), pxeROMParams}},
	{name: "UEFI x64", pxe: true, file: "ipxe.efi", mods: []dhcpv4.Modifier{
		vendorClass("PXEClient:Arch:00007:UNDI:003016"), archOpt(7), pxeROMParams}},
	{name: "UEFI BC", pxe: true, file: "ipxe.efi", mods: []dhcpv4.Modifier{
		vendorClass("PXEClient:Arch:00009:UNDI:003016"), archOpt(9), pxeROMParams}},
	{name: "UEFI ARM64", pxe: true, file: "ipxe-arm64.efi", mods: []dhcpv4.Modifier{
		vendorClass("PXEClient:Arch:00011:UNDI:003001"), archOpt(11), pxeROMParams}},
	{name: "BIOS ROM without option 93", pxe: true, file: "undionly.kpxe", mods: []dhcpv4.Modifier{
		vendorClass("PXEClient:Arch:00000:UNDI:002001")}},
	{name: "iPXE", pxe: true, ipxe: true, mods: []dhcpv4.Modifier{
		vendorClass("PXEClient:Arch:00000:UNDI:002001"), archOpt(0),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optUserClass), []byte("iPXE")),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optIPXE), []byte{0xb1, 1, 1}),
		params(1, 3, 6, 43, 60, 66, 67, 175)}},
	{name: "iPXE EFI by user class only", pxe: true, ipxe: true, mods: []dhcpv4.Modifier{
		dhcpv4.WithUserClass("iPXE", true), archOpt(7)}},
	{name: "non-PXE", mods: []dhcpv4.Modifier{vendorClass("MSFT 5.0"), params(1, 3, 6)}},
	{name: "non-PXE without options"},
}

// params is a parameter request list (option 55).
func params(codes ...uint8) dhcpv4.Modifier {
	var oc []dhcpv4.OptionCode
	for _, c := range codes {
		oc = append(oc, dhcpv4.GenericOptionCode(c))
	}
	return dhcpv4.WithRequestedOptions(oc...)
}

func mac(n byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0x10, n} }

func discover(t testing.TB, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(hw, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func request(t testing.TB, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	return discover(t, hw, append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, mods...)...)
}

// recorder counts ScriptURL and Seen calls.
type recorder struct {
	mu      sync.Mutex
	scripts int
	seen    map[string]netip.Addr // last address per MAC
	seenAll []netip.Addr
}

func (r *recorder) scriptURL(m net.HardwareAddr) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scripts++
	return "http://10.77.0.1:8080/boot/" + m.String() + "/secret" + string(rune('0'+r.scripts))
}

func (r *recorder) seenFn(m net.HardwareAddr, ip netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]netip.Addr{}
	}
	r.seen[m.String()] = ip
	r.seenAll = append(r.seenAll, ip)
}

func proxyConfig(r *recorder) Config {
	return Config{Mode: ModeProxy, ServerIP: serverIP, ScriptURL: r.scriptURL, Seen: r.seenFn}
}

func fullConfig(r *recorder) Config {
	return Config{
		Mode: ModeFull, ServerIP: serverIP, ScriptURL: r.scriptURL, Seen: r.seenFn,
		AllowAll: true, // tests of admission set their own
		Pool:     Pool{netip.MustParseAddr("10.77.0.100"), netip.MustParseAddr("10.77.0.199")},
		Netmask:  net.CIDRMask(24, 32), Router: serverIP,
		DNS:       []netip.Addr{netip.MustParseAddr("10.77.0.2")},
		LeaseTime: 2 * time.Hour,
	}
}

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handle sends req as a client does: from its own address (ciaddr), or
// from none.
func handle(t testing.TB, s *Server, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	return handleFrom(t, s, req, addr(req.ClientIPAddr))
}

func handleFrom(t testing.TB, s *Server, req *dhcpv4.DHCPv4, from netip.Addr) *dhcpv4.DHCPv4 {
	t.Helper()
	reply, err := s.Handle(req, from)
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if reply != nil {
		checkWellFormed(t, s, req, reply)
	}
	return reply
}

// leaseOptions are what only a server that gives addresses may send.
var leaseOptions = []dhcpv4.OptionCode{
	dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
}

// checkWellFormed holds for every reply: it survives the wire, answers the
// request's transaction and client, names this server, and in proxy mode
// carries no address.
func checkWellFormed(t testing.TB, s *Server, req, reply *dhcpv4.DHCPv4) {
	t.Helper()
	wire, err := dhcpv4.FromBytes(reply.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v\n%s", err, reply.Summary())
	}
	if wire.OpCode != dhcpv4.OpcodeBootReply || wire.TransactionID != req.TransactionID ||
		!bytes.Equal(wire.ClientHWAddr, req.ClientHWAddr) {
		t.Fatalf("reply does not answer the request:\n%s", wire.Summary())
	}
	if sid := wire.ServerIdentifier(); !sid.Equal(net.IP(s.cfg.ServerIP.AsSlice())) {
		t.Fatalf("server identifier %v, want %v", sid, s.cfg.ServerIP)
	}
	switch wire.MessageType() {
	case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak:
	default:
		t.Fatalf("reply type %v", wire.MessageType())
	}
	if s.cfg.Mode == ModeProxy {
		if !wire.YourIPAddr.IsUnspecified() {
			t.Fatalf("proxy reply gives address %v", wire.YourIPAddr)
		}
		for _, o := range leaseOptions {
			if wire.Options.Has(o) {
				t.Fatalf("proxy reply carries lease option %v", o)
			}
		}
		if wire.ClassIdentifier() != "PXEClient" {
			t.Fatalf("proxy reply option 60 %q, want PXEClient", wire.ClassIdentifier())
		}
	}
}

func TestHandleAnswersEachClientKind(t *testing.T) {
	for _, mode := range []Mode{ModeProxy, ModeFull} {
		for _, k := range kinds {
			t.Run(string(mode)+"/"+k.name, func(t *testing.T) {
				var r recorder
				cfg := proxyConfig(&r)
				if mode == ModeFull {
					cfg = fullConfig(&r)
				}
				s := newServer(t, cfg)
				hw := mac(1)
				reply := handle(t, s, discover(t, hw, k.mods...))

				if mode == ModeProxy && !k.pxe {
					if reply != nil {
						t.Fatalf("proxy answered a non-PXE client:\n%s", reply.Summary())
					}
					return
				}
				if reply == nil {
					t.Fatal("no answer")
				}
				if reply.MessageType() != dhcpv4.MessageTypeOffer {
					t.Fatalf("answer %v, want OFFER", reply.MessageType())
				}
				if mode == ModeFull {
					if ip := addr(reply.YourIPAddr); !cfg.Pool.contains(ip) {
						t.Fatalf("offered %v, outside the pool", reply.YourIPAddr)
					}
					if reply.IPAddressLeaseTime(0) != 2*time.Hour || !reply.Router()[0].Equal(net.IP(serverIP.AsSlice())) {
						t.Fatalf("lease options missing:\n%s", reply.Summary())
					}
				}

				wantFile := k.file
				if k.ipxe {
					wantFile = "http://10.77.0.1:8080/boot/" + hw.String() + "/secret1"
				}
				if reply.BootFileName != wantFile {
					t.Fatalf("boot file %q, want %q", reply.BootFileName, wantFile)
				}
				if !k.pxe {
					if reply.Options.Has(dhcpv4.OptionVendorSpecificInformation) || reply.Options.Has(dhcpv4.OptionClassIdentifier) ||
						!reply.ServerIPAddr.IsUnspecified() {
						t.Fatalf("plain lease carries boot options:\n%s", reply.Summary())
					}
					if len(r.seen) != 0 {
						t.Fatalf("Seen called for a non-PXE client")
					}
					return
				}
				if !reply.ServerIPAddr.Equal(net.IP(serverIP.AsSlice())) {
					t.Fatalf("siaddr %v, want %v", reply.ServerIPAddr, serverIP)
				}
				if _, ok := r.seen[hw.String()]; !ok {
					t.Fatalf("Seen not called for a PXE client")
				}
				wantScripts := 0
				if k.ipxe {
					wantScripts = 1
					if reply.BootFileNameOption() != wantFile {
						t.Fatalf("option 67 %q, want %q", reply.BootFileNameOption(), wantFile)
					}
				} else {
					// Discovery control 8: boot the file in this answer, no menu.
					if got := reply.Options.Get(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(got, []byte{6, 1, 8, 255}) {
						t.Fatalf("option 43 % x, want 06 01 08 ff", got)
					}
					if reply.ClassIdentifier() != "PXEClient" {
						t.Fatalf("option 60 %q, want PXEClient", reply.ClassIdentifier())
					}
				}
				if r.scripts != wantScripts {
					t.Fatalf("ScriptURL called %d times, want %d", r.scripts, wantScripts)
				}
			})
		}
	}
}

func TestProxyAcksBootServerRequest(t *testing.T) {
	var r recorder
	s := newServer(t, proxyConfig(&r))
	client := net.IPv4(10, 77, 0, 57)
	// A UEFI ROM on port 4011: it has its address from the school's server,
	// asks for boot item 1 layer 0, and sends its UUID.
	req := request(t, mac(2), append(kinds[1].mods,
		dhcpv4.WithClientIP(client),
		dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0x00, 0x00, 0x00, 255}),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optUUID), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}),
	)...)
	reply := handle(t, s, req)
	if reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("want ACK, got %v", reply)
	}
	if reply.BootFileName != "ipxe.efi" {
		t.Fatalf("boot file %q", reply.BootFileName)
	}
	want43 := []byte{6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255}
	if got := reply.Options.Get(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(got, want43) {
		t.Fatalf("option 43 % x, want % x", got, want43)
	}
	if got := reply.Options.Get(dhcpv4.GenericOptionCode(optUUID)); len(got) != 17 {
		t.Fatalf("UUID not echoed: % x", got)
	}
	if r.seen[mac(2).String()] != addr(client) {
		t.Fatalf("Seen got %v, want the client's address %v", r.seen[mac(2).String()], client)
	}
}

func TestProxyStaysSilent(t *testing.T) {
	var r recorder
	s := newServer(t, proxyConfig(&r))
	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
	}{
		{"non-PXE request", request(t, mac(3), dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 9)))},
		{"PXE request selecting the school's offer", request(t, mac(3), append(kinds[0].mods,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(otherDHCP)),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 9))))...)},
		{"PXE request for the proxy's offer, as a client without an address sends it", request(t, mac(3), append(kinds[0].mods,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4zero)))...)},
		{"PXE release", discover(t, mac(3), append(kinds[0].mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease))...)},
		{"PXE reply instead of request", discover(t, mac(3), append(kinds[0].mods, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply })...)},
		{"PXE without a MAC", discover(t, nil, kinds[0].mods...)},
		{"PXE of an unknown architecture", discover(t, mac(3), vendorClass("PXEClient"), archOpt(25))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if reply := handle(t, s, tc.req); reply != nil {
				t.Fatalf("answered:\n%s", reply.Summary())
			}
		})
	}
	if !slices.Contains(r.seenAll, netip.MustParseAddr("10.77.0.9")) {
		t.Fatalf("Seen did not record the address the school gave: %v", r.seen)
	}
}

func TestIPXEScriptURLOncePerAnswer(t *testing.T) {
	long := "http://tms-region.example.school:8080/boot/" + strings.Repeat("s", 150)
	calls := 0
	cfg := Config{Mode: ModeProxy, ServerIP: serverIP, ScriptURL: func(net.HardwareAddr) string { calls++; return long }}
	s := newServer(t, cfg)
	ipxe := kinds[5].mods
	for i := 1; i <= 3; i++ {
		reply := handle(t, s, discover(t, mac(4), ipxe...))
		if calls != i {
			t.Fatalf("after %d answers ScriptURL was called %d times", i, calls)
		}
		// Too long for the 128-byte file field: option 67 only.
		if reply.BootFileName != "" || reply.BootFileNameOption() != long {
			t.Fatalf("file %q, option 67 %q", reply.BootFileName, reply.BootFileNameOption())
		}
	}
	handle(t, s, discover(t, mac(4), kinds[0].mods...))
	handle(t, s, discover(t, mac(4)))
	if calls != 3 {
		t.Fatalf("ScriptURL called for a firmware or non-PXE client")
	}
}

// dora runs DISCOVER, REQUEST and returns the ACKed address.
func dora(t testing.TB, s *Server, hw net.HardwareAddr, mods ...dhcpv4.Modifier) netip.Addr {
	t.Helper()
	offer := handle(t, s, discover(t, hw, mods...))
	if offer == nil {
		t.Fatalf("no offer for %v", hw)
	}
	ack := handle(t, s, request(t, hw, append(mods,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)))...))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("want ACK of %v, got %v", offer.YourIPAddr, ack)
	}
	return addr(ack.YourIPAddr)
}

func TestFullGivesEachMACAStableAddress(t *testing.T) {
	var r recorder
	s := newServer(t, fullConfig(&r))
	got := map[netip.Addr]string{}
	for i := byte(1); i <= 5; i++ {
		ip := dora(t, s, mac(i))
		if other, dup := got[ip]; dup {
			t.Fatalf("%v given to %v and %v", ip, other, mac(i))
		}
		got[ip] = mac(i).String()
		if ip == serverIP {
			t.Fatalf("handed out the server's own address")
		}
	}
	for ip, m := range got {
		hw, _ := net.ParseMAC(m)
		if again := dora(t, s, hw); again != ip {
			t.Fatalf("%v got %v, then %v", m, ip, again)
		}
	}
}

func TestFullLeaseLifecycle(t *testing.T) {
	var r recorder
	s := newServer(t, fullConfig(&r))
	now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	hw := mac(7)
	ip := dora(t, s, hw, kinds[0].mods...)
	if r.seen[hw.String()] != ip {
		t.Fatalf("Seen got %v, want %v", r.seen[hw.String()], ip)
	}
	ipNet := net.IP(ip.AsSlice())

	renew := handle(t, s, request(t, hw, dhcpv4.WithClientIP(ipNet)))
	if renew.MessageType() != dhcpv4.MessageTypeAck || !renew.YourIPAddr.Equal(ipNet) {
		t.Fatalf("renewal: %v", renew.Summary())
	}
	// INIT-REBOOT with an address this MAC does not hold: NAK.
	nak := handle(t, s, request(t, hw, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 150)))))
	if nak.MessageType() != dhcpv4.MessageTypeNak || !nak.IsBroadcast() || !nak.YourIPAddr.IsUnspecified() {
		t.Fatalf("want broadcast NAK, got %v", nak.Summary())
	}
	// Another MAC asking for this one's address: NAK.
	if nak := handle(t, s, request(t, mac(8), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipNet)))); nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("another MAC took a bound address: %v", nak.Summary())
	}
	// An address outside the lab's subnet (the PC moved rooms): NAK.
	if nak := handle(t, s, request(t, mac(8), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 168, 1, 20))))); nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("want NAK for a foreign address: %v", nak.Summary())
	}

	// Release keeps the binding: the same address comes back.
	handle(t, s, discover(t, hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ipNet)))
	if l := s.leases.byMAC[hw.String()]; l == nil || l.Expires.After(now) {
		t.Fatalf("lease not ended by release: %+v", l)
	}
	if again := dora(t, s, hw); again != ip {
		t.Fatalf("after release got %v, want %v", again, ip)
	}

	// Decline: the address is in use by someone else; nobody gets it.
	handle(t, s, discover(t, hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipNet))))
	if next := dora(t, s, hw); next == ip {
		t.Fatalf("declined address %v offered again", ip)
	}

	// A client that picks another server's offer frees ours.
	offer := handle(t, s, discover(t, mac(9)))
	handle(t, s, request(t, mac(9), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(otherDHCP)),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))))
	if l := s.leases.byIP[addr(offer.YourIPAddr)]; l != nil {
		t.Fatalf("offer kept after the client chose another server: %+v", l)
	}
}

func TestFullLeasesSurviveRestart(t *testing.T) {
	var r recorder
	cfg := fullConfig(&r)
	dir := t.TempDir()
	cfg.LeaseFile = filepath.Join(dir, "leases.json")
	s := newServer(t, cfg)
	want := map[string]netip.Addr{}
	for i := byte(1); i <= 3; i++ {
		want[mac(i).String()] = dora(t, s, mac(i))
	}

	var lf leaseFile
	b, err := os.ReadFile(cfg.LeaseFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &lf); err != nil || len(lf.Leases) != 3 {
		t.Fatalf("lease file holds %d leases (%v):\n%s", len(lf.Leases), err, b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left next to the lease file: %v", ents)
	}

	// A new MAC asking for an address already leased must not get it
	// after the restart either. Ask in reverse order so first-free
	// allocation alone would give other addresses.
	s2 := newServer(t, cfg)
	for i := byte(3); i >= 1; i-- {
		offer := handle(t, s2, discover(t, mac(i)))
		if got := addr(offer.YourIPAddr); got != want[mac(i).String()] {
			t.Fatalf("after restart %v offered %v, want %v", mac(i), got, want[mac(i).String()])
		}
	}
	offer := handle(t, s2, discover(t, mac(20), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(want[mac(1).String()].AsSlice())))))
	if addr(offer.YourIPAddr) == want[mac(1).String()] {
		t.Fatalf("a leased address went to another MAC after restart")
	}
}

func TestFullPoolExhaustion(t *testing.T) {
	var logs bytes.Buffer
	var r recorder
	cfg := fullConfig(&r)
	cfg.Pool = Pool{netip.MustParseAddr("10.77.0.100"), netip.MustParseAddr("10.77.0.101")}
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	s := newServer(t, cfg)
	now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	dora(t, s, mac(1))
	dora(t, s, mac(2))
	if reply := handle(t, s, discover(t, mac(3))); reply != nil {
		t.Fatalf("offered from an exhausted pool:\n%s", reply.Summary())
	}
	if !strings.Contains(logs.String(), "pool exhausted") {
		t.Fatalf("exhaustion not logged: %q", logs.String())
	}
	// Once a lease has expired its address goes to the waiting MAC.
	now = now.Add(3 * time.Hour)
	if reply := handle(t, s, discover(t, mac(3))); reply == nil {
		t.Fatal("expired leases not reclaimed")
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	var r recorder
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"mode", func(c *Config) { c.Mode = "relay" }},
		{"server_ip", func(c *Config) { c.ServerIP = netip.Addr{} }},
		{"script_url", func(c *Config) { c.ScriptURL = nil }},
		{"netmask", func(c *Config) { c.Netmask = nil }},
		{"pool", func(c *Config) { c.Pool.Start, c.Pool.End = c.Pool.End, c.Pool.Start }},
		{"pool", func(c *Config) { c.Pool.End = netip.MustParseAddr("10.78.0.1") }},
		{"router", func(c *Config) { c.Router = netip.MustParseAddr("192.168.0.1") }},
		{"lease_time", func(c *Config) { c.LeaseTime = time.Second }},
	} {
		cfg := fullConfig(&r)
		tc.edit(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), "dhcp "+tc.field) {
			t.Errorf("%s: error %v does not name the field", tc.field, err)
		}
	}
}

func TestFullUnwritableLeaseFile(t *testing.T) {
	var r recorder
	cfg := fullConfig(&r)
	dir := t.TempDir()
	cfg.LeaseFile = filepath.Join(dir, "missing", "leases.json")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "dhcp lease_file") {
		t.Fatalf("New with an unwritable lease file: %v", err)
	}

	// The directory goes away while serving: no ACK that a restart
	// would forget, and an error to log.
	cfg.LeaseFile = filepath.Join(dir, "gone", "leases.json")
	if err := os.Mkdir(filepath.Dir(cfg.LeaseFile), 0o755); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, cfg)
	if err := os.RemoveAll(filepath.Dir(cfg.LeaseFile)); err != nil {
		t.Fatal(err)
	}
	offer := handle(t, s, discover(t, mac(1)))
	reply, err := s.Handle(request(t, mac(1),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))), netip.Addr{})
	if err == nil || reply != nil {
		t.Fatalf("ACK without a saved lease: reply %v, err %v", reply, err)
	}
}

func TestFullPXEWithoutBootFileGetsPlainLease(t *testing.T) {
	var r recorder
	cfg := fullConfig(&r)
	s := newServer(t, cfg)
	reply := handle(t, s, discover(t, mac(1), vendorClass("PXEClient"), archOpt(25))) // RISC-V: no iPXE binary here
	if reply == nil || !cfg.Pool.contains(addr(reply.YourIPAddr)) {
		t.Fatalf("no lease for a PXE client without a boot file: %v", reply)
	}
	if reply.BootFileName != "" || !reply.ServerIPAddr.IsUnspecified() || reply.Options.Has(dhcpv4.OptionVendorSpecificInformation) {
		t.Fatalf("boot options without a boot file:\n%s", reply.Summary())
	}
}
