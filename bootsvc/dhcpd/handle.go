package dhcpd

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"tms/metrics"
)

// Server answers DHCP requests of terminals. Its methods are safe for
// concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	subnet netip.Prefix     // full mode: the segment the pool lies in
	now    func() time.Time // tests move the clock
	limit  *limiter         // requests of clients that are not admitted
	tally  tally            // their log lines
	counts counters

	mu     sync.Mutex
	leases *leases // full mode only
}

// New checks cfg and, in full mode, loads the lease file.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, now: time.Now}
	s.limit = newLimiter(cfg.UnknownPerMAC, cfg.UnknownTotal, s.now())
	if cfg.Mode == ModeFull {
		ones, _ := cfg.Netmask.Size()
		s.subnet = netip.PrefixFrom(cfg.ServerIP, ones).Masked()
		var dropped []netip.Addr
		s.leases, dropped, err = loadLeases(cfg.Pool, cfg.LeaseFile)
		if err != nil {
			return nil, err
		}
		if len(dropped) > 0 {
			s.log.Warn("dhcp leases outside the pool dropped", "file", cfg.LeaseFile, "addresses", dropped)
		}
		// Write once now, so an unwritable lease file stops the start
		// instead of the first terminal's boot.
		if err := s.leases.save(); err != nil {
			return nil, fmt.Errorf("dhcp lease_file: %w", err)
		}
	}
	return s, nil
}

// Handle answers one request that came from the UDP source address from
// (the zero Addr if unknown, or if the client had none). A nil reply means
// stay silent: the request is not for this server, the client is not
// admitted, or there is nothing to give. An error means a lease could not be
// persisted; the reply is then nil, and the client's retry tries again.
//
// Handle never panics on what a network peer sends; FuzzHandle checks it.
//
// Config.Meter counts each request by its result (metrics.DHCP*).
func (s *Server) Handle(req *dhcpv4.DHCPv4, from netip.Addr) (*dhcpv4.DHCPv4, error) {
	reply, result, err := s.handle(req, from)
	switch {
	case err != nil:
		result = metrics.DHCPError
	case reply != nil:
		result = metrics.DHCPAnswered
	case result == "":
		result = metrics.DHCPIgnored
	}
	if s.cfg.Meter != nil {
		s.cfg.Meter.DHCPRequest(result)
	}
	return reply, err
}

// handle is Handle; when it gives no reply, the result says why, if it was a refusal.
func (s *Server) handle(req *dhcpv4.DHCPv4, from netip.Addr) (*dhcpv4.DHCPv4, string, error) {
	if req == nil || req.OpCode != dhcpv4.OpcodeBootRequest ||
		req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, metrics.DHCPMalformed, nil
	}
	c := classify(req)
	if s.cfg.Mode == ModeProxy {
		if !c.pxe {
			return nil, "", nil
		}
		// proxyDHCP never gives an address, and a PC that is not
		// enrolled gets a script that boots its own disk: answering it
		// is harmless, and how admins find new PCs to enroll. Only the
		// rate limits apply.
		if s.admit(req.ClientHWAddr) == dropped {
			return nil, metrics.DHCPRateLimited, nil
		}
		// Another server of the region answers this PC.
		if s.cfg.Answer != nil && !s.cfg.Answer(req.ClientHWAddr) {
			s.counts.otherServer.Add(1)
			return nil, metrics.DHCPOtherServer, nil
		}
		return s.proxy(req, c), "", nil
	}
	if gw := addr(req.GatewayIPAddr); gw.IsValid() && !s.subnet.Contains(gw) {
		return nil, "", nil // relayed from a segment this pool does not serve
	}
	switch s.admit(req.ClientHWAddr) {
	case dropped:
		return nil, metrics.DHCPRateLimited, nil
	case failed:
		return nil, metrics.DHCPAdmitError, nil
	case unknown:
		s.refuse(req, c)
		return nil, metrics.DHCPNotAdmitted, nil
	}
	reply, err := s.full(req, c, from)
	return reply, "", err
}

// refuse records a request of a MAC that is not admitted: no lease. A PXE
// client is still reported to Seen, so that an admin finds the PC and can
// enroll it; its next boot then gets a lease.
func (s *Server) refuse(req *dhcpv4.DHCPv4, c client) {
	mac := req.ClientHWAddr
	s.counts.refused.Add(1)
	s.tally.note(s.log, s.now(), tallyRefused, mac, nil)
	s.log.Debug("dhcp: no lease for a MAC that is not admitted", "type", req.MessageType(), "mac", mac.String(), "pxe", c.pxe)
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest:
		if c.pxe {
			s.seen(mac, netip.Addr{})
		}
	}
}

// proxy answers PXE clients with boot options only (PXE spec 2.1,
// "ProxyDHCP"): DHCPOFFER to a DISCOVER on port 67, DHCPACK to the REQUEST of
// a client that has its address, on port 4011 or, as some ROMs send it, on
// port 67. It never gives an address.
func (s *Server) proxy(req *dhcpv4.DHCPv4, c client) *dhcpv4.DHCPv4 {
	if !c.pxe {
		return nil
	}
	mac := req.ClientHWAddr
	ip := addr(req.ClientIPAddr)
	if !ip.IsValid() {
		ip = addr(req.RequestedIPAddress()) // option 50: what the school's server gave
	}

	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest:
		s.seen(mac, ip)
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// Only a client that already holds an address (ciaddr) asks a
		// boot server: on port 4011, or broadcast on port 67 as some
		// ROMs do. A REQUEST without one is getting an address, from
		// the school's server (option 54) or, for a client that is not
		// really a PXE ROM, from our offer; an ACK without an address
		// would then pass for a lease of 0.0.0.0.
		if !addr(req.ClientIPAddr).IsValid() {
			return nil
		}
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.serverIP()) {
			return nil
		}
		mt = dhcpv4.MessageTypeAck
	default:
		return nil
	}
	reply := s.reply(req, mt)
	if !s.addBoot(reply, req, c) {
		return nil
	}
	// Option 60 "PXEClient" marks the answer as proxyDHCP; the client
	// UUID (option 97) is echoed as the PXE spec asks of boot servers.
	reply.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	if uuid := req.Options.Get(dhcpv4.GenericOptionCode(optUUID)); uuid != nil {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optUUID), uuid))
	}
	s.log.Debug("dhcp proxy answer", "type", mt, "mac", mac.String(), "arch", c.arch, "ipxe", c.ipxe, "file", reply.BootFileName)
	return reply
}

// full serves addresses from the pool (RFC 2131 section 4.3) and adds boot
// options for PXE clients.
func (s *Server) full(req *dhcpv4.DHCPv4, c client, from netip.Addr) (*dhcpv4.DHCPv4, error) {
	mac := req.ClientHWAddr
	var (
		reply *dhcpv4.DHCPv4
		ip    netip.Addr
		err   error
	)
	s.mu.Lock()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		reply, ip = s.discover(req)
	case dhcpv4.MessageTypeRequest:
		reply, ip, err = s.request(req)
	case dhcpv4.MessageTypeRelease:
		err = s.release(req, from)
	case dhcpv4.MessageTypeDecline:
		err = s.decline(req)
	case dhcpv4.MessageTypeInform:
		// RFC 2131 4.3.5: configuration only, no lease.
		reply = s.reply(req, dhcpv4.MessageTypeAck)
		reply.ClientIPAddr = req.ClientIPAddr
		s.addNetwork(reply)
		ip = addr(req.ClientIPAddr)
	}
	s.mu.Unlock()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		if c.pxe {
			s.seen(mac, ip)
		}
	}
	if err != nil || reply == nil {
		return nil, err
	}
	if c.pxe && reply.MessageType() != dhcpv4.MessageTypeNak {
		if s.addBoot(reply, req, c) && !c.ipxe {
			reply.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
		}
	}
	s.log.Debug("dhcp answer", "type", reply.MessageType(), "mac", mac.String(), "ip", reply.YourIPAddr, "pxe", c.pxe, "file", reply.BootFileName)
	return reply, nil
}

func (s *Server) discover(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, netip.Addr) {
	now := s.now()
	mac := req.ClientHWAddr.String()
	l, ok := s.leases.allocate(mac, addr(req.RequestedIPAddress()), s.reserved(), now)
	if !ok {
		s.log.Warn("dhcp pool exhausted: no address to offer", "mac", mac,
			"pool_start", s.cfg.Pool.Start, "pool_end", s.cfg.Pool.End)
		return nil, netip.Addr{}
	}
	if hold := now.Add(offerHold); l.Expires.Before(hold) {
		l.Expires = hold // nobody reclaims it while the client decides
	}
	return s.leaseReply(req, dhcpv4.MessageTypeOffer, l.IP), l.IP
}

// request handles the three kinds of DHCPREQUEST of RFC 2131 4.3.2:
// SELECTING (option 54 and 50), INIT-REBOOT (option 50 only) and
// RENEWING/REBINDING (ciaddr only).
func (s *Server) request(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, netip.Addr, error) {
	now := s.now()
	mac := req.ClientHWAddr.String()
	l := s.leases.byMAC[mac]
	sid := req.ServerIdentifier()
	if sid != nil && !sid.Equal(s.serverIP()) {
		// The client took another server's offer: free ours.
		if l != nil && !l.Bound {
			s.leases.remove(l)
		}
		return nil, netip.Addr{}, nil
	}
	ip := addr(req.RequestedIPAddress())
	if !ip.IsValid() {
		ip = addr(req.ClientIPAddr)
	}
	if !ip.IsValid() {
		return nil, netip.Addr{}, nil
	}
	if l != nil && l.IP != ip {
		// This MAC has another address: NAK, so that it starts over
		// with a DISCOVER and keeps its own.
		return s.nak(req), netip.Addr{}, nil
	}
	if l == nil {
		// No record of this MAC (the lease file was lost, or the PC
		// comes from elsewhere). This server is the lab's only one and
		// so authoritative: give ip if it is free, NAK otherwise.
		if sid != nil || !s.cfg.Pool.contains(ip) || slices.Contains(s.reserved(), ip) || !s.leases.free(ip, mac, now) {
			return s.nak(req), netip.Addr{}, nil
		}
		if old := s.leases.byIP[ip]; old != nil {
			s.leases.remove(old) // expired binding of another MAC
		}
		l = s.leases.take(mac, ip, now)
	}
	l.Bound = true
	l.Expires = now.Add(s.cfg.LeaseTime)
	if err := s.leases.save(); err != nil {
		return nil, netip.Addr{}, err
	}
	return s.leaseReply(req, dhcpv4.MessageTypeAck, ip), ip, nil
}

// release ends a lease early (RFC 2131 4.3.4) but keeps the binding, so the
// terminal gets the same address next time. Only the lease holder may: the
// MAC's bound lease, ciaddr its address, and the request sent from that
// address (4.4.6: the client unicasts DHCPRELEASE from its address). A
// RELEASE that fails any of these is ignored: a PC that spoofs a MAC must
// not end another terminal's lease from elsewhere.
func (s *Server) release(req *dhcpv4.DHCPv4, from netip.Addr) error {
	mac := req.ClientHWAddr.String()
	l := s.leases.byMAC[mac]
	ci := addr(req.ClientIPAddr)
	if l == nil || !l.Bound || l.IP != ci || from != ci {
		s.counts.releaseIgnored.Add(1)
		s.log.Debug("dhcp: RELEASE ignored: not from the lease holder", "mac", mac, "ciaddr", ci, "from", from)
		return nil
	}
	l.Expires = s.now()
	return s.leases.save()
}

// decline marks an address that another machine already uses (RFC 2131
// 4.3.3): nobody gets it for a lease time, and the client gets a new one.
// Only an address this server currently offers or leases to the MAC can be
// declined (a client declines what it was just given, 4.4.1), and at most
// maxDeclinedShare of the pool is held declined at once, so that a client
// cannot empty the pool by declining address after address.
func (s *Server) decline(req *dhcpv4.DHCPv4) error {
	mac := req.ClientHWAddr.String()
	ip := addr(req.RequestedIPAddress())
	l := s.leases.byIP[ip]
	now := s.now()
	sid := req.ServerIdentifier()
	why := ""
	switch {
	case sid != nil && !sid.Equal(s.serverIP()):
		why = "for another server"
	case l == nil || l.MAC != mac:
		why = "address not offered or leased to this MAC"
	case !l.Expires.After(now):
		why = "lease ended"
	case s.leases.declined(now) >= max(1, poolSize(s.cfg.Pool)/maxDeclinedShare):
		why = "too many addresses declined already"
	}
	if why != "" {
		s.counts.declineIgnored.Add(1)
		s.log.Debug("dhcp: DECLINE ignored", "reason", why, "mac", mac, "ip", ip)
		return nil
	}
	s.log.Warn("dhcp address declined: another machine uses it", "ip", ip, "mac", l.MAC)
	s.leases.remove(l)
	s.leases.add(&lease{IP: ip, Expires: now.Add(s.cfg.LeaseTime), Bound: true})
	return s.leases.save()
}

// maxDeclinedShare: at most 1/8 of the pool is held declined at once.
const maxDeclinedShare = 8

// reserved are the pool addresses never handed out.
func (s *Server) reserved() []netip.Addr {
	return []netip.Addr{s.cfg.ServerIP, s.cfg.Router}
}

func (s *Server) serverIP() net.IP { return net.IP(s.cfg.ServerIP.AsSlice()) }

// reply starts an answer from the request: xid, chaddr, flags, giaddr and
// relay information are copied; option 54 names this server.
func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	reply, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.serverIP())),
	)
	if err != nil {
		// Only the random transaction id can fail, and the reply
		// overwrites it with the request's.
		panic(fmt.Sprintf("dhcpd: building a reply: %v", err))
	}
	return reply
}

func (s *Server) nak(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	reply := s.reply(req, dhcpv4.MessageTypeNak)
	reply.SetBroadcast() // RFC 2131 4.3.2: the client may have no address
	return reply
}

func (s *Server) leaseReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, ip netip.Addr) *dhcpv4.DHCPv4 {
	reply := s.reply(req, mt)
	reply.YourIPAddr = net.IP(ip.AsSlice())
	t := s.cfg.LeaseTime
	reply.UpdateOption(dhcpv4.OptIPAddressLeaseTime(t))                     // 51
	reply.UpdateOption(dhcpv4.OptRenewTimeValue(t / 2))                     // 58: T1
	reply.UpdateOption(dhcpv4.Option{Code: dhcpv4.OptionRebindingTimeValue, // 59: T2
		Value: dhcpv4.Duration(t * 7 / 8)})
	s.addNetwork(reply)
	return reply
}

func (s *Server) addNetwork(reply *dhcpv4.DHCPv4) {
	reply.UpdateOption(dhcpv4.OptSubnetMask(s.cfg.Netmask)) // 1
	if s.cfg.Router.IsValid() {
		reply.UpdateOption(dhcpv4.OptRouter(net.IP(s.cfg.Router.AsSlice()))) // 3
	}
	if len(s.cfg.DNS) > 0 {
		var dns []net.IP
		for _, d := range s.cfg.DNS {
			dns = append(dns, net.IP(d.AsSlice()))
		}
		reply.UpdateOption(dhcpv4.OptDNS(dns...)) // 6
	}
}

// addBoot tells the client what to boot. A firmware ROM gets the iPXE binary
// for its architecture over TFTP from this server; iPXE gets its script over
// HTTP, which ends the chain-load loop. It reports false when there is
// nothing to boot: no binary for the architecture, or no script.
func (s *Server) addBoot(reply, req *dhcpv4.DHCPv4, c client) bool {
	var file string
	if c.ipxe {
		file = s.cfg.ScriptURL(req.ClientHWAddr) // once per answer: it holds a fresh secret
		if file == "" {
			s.log.Warn("dhcp: no iPXE script for terminal", "mac", req.ClientHWAddr.String())
			return false
		}
		// iPXE reads option 67 before the 128-byte file field, which a
		// long URL would not fit.
		reply.UpdateOption(dhcpv4.OptBootFileName(file)) // 67
		if len(file) <= 127 {
			reply.BootFileName = file
		}
		reply.ServerIPAddr = s.serverIP()
		return true
	}
	file, ok := s.cfg.BootFiles[c.arch]
	if !ok {
		s.log.Warn("dhcp: no boot file for PXE architecture", "mac", req.ClientHWAddr.String(), "arch", c.arch)
		return false
	}
	reply.BootFileName = file
	reply.ServerIPAddr = s.serverIP() // siaddr: the TFTP server
	if req.IsOptionRequested(dhcpv4.OptionTFTPServerName) {
		reply.UpdateOption(dhcpv4.OptTFTPServerName(s.cfg.ServerIP.String())) // 66
	}
	if req.IsOptionRequested(dhcpv4.OptionBootfileName) {
		reply.UpdateOption(dhcpv4.OptBootFileName(file)) // 67
	}
	reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions(req))) // 43
	return true
}

// PXE vendor options (PXE spec 2.1, table 2-1), inside option 43.
const (
	pxeDiscoveryControl = 6
	pxeBootItem         = 71
	pxeEnd              = 255
	// Bit 3 of discovery control: a boot file name is in this answer,
	// download it without a boot server menu or discovery.
	pxeUseBootFile = 0x08
)

func pxeVendorOptions(req *dhcpv4.DHCPv4) []byte {
	b := []byte{pxeDiscoveryControl, 1, pxeUseBootFile}
	// A boot server request on port 4011 names a boot item; the answer
	// echoes it (type and layer) so the ROM accepts the answer.
	if item := subOption(req.Options.Get(dhcpv4.OptionVendorSpecificInformation), pxeBootItem); len(item) == 4 {
		b = append(b, pxeBootItem, 4)
		b = append(b, item...)
	}
	return append(b, pxeEnd)
}

// subOption finds code in encapsulated options (code, length, value...).
func subOption(opts []byte, code byte) []byte {
	for len(opts) >= 2 {
		c, n := opts[0], int(opts[1])
		if c == pxeEnd {
			return nil
		}
		if c == 0 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2+n {
			return nil
		}
		if c == code {
			return bytes.Clone(opts[2 : 2+n])
		}
		opts = opts[2+n:]
	}
	return nil
}

func (s *Server) seen(mac net.HardwareAddr, ip netip.Addr) {
	if s.cfg.Seen != nil {
		s.cfg.Seen(slices.Clone(mac), ip)
	}
}

// addr converts a field or option to a netip.Addr; zero and absent
// addresses become the invalid Addr.
func addr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}
