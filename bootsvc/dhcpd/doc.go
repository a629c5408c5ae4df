// Package dhcpd is the DHCP side of a region's boot service: it sends the
// classroom PCs ("terminals") that boot from the network to iPXE, and iPXE
// to the terminal's script.
//
// A firmware PXE ROM (option 60 starting "PXEClient") gets the iPXE binary
// for its architecture (option 93) over TFTP from Config.ServerIP. iPXE
// (option 175, or user class "iPXE") gets the HTTP URL of its script from
// Config.ScriptURL instead, which ends the chain-load loop. Every PXE client
// is reported to Config.Seen, so admins see PCs that are not enrolled.
//
// Two modes:
//
//   - ModeProxy, where the school already runs a DHCP server: proxyDHCP
//     (PXE spec 2.1). Only PXE clients get answers, and never an address:
//     an OFFER on port 67 beside the school's offer, an ACK to boot server
//     requests on port 4011.
//   - ModeFull, for isolated labs: a DHCP server (RFC 2131) with an address
//     pool and leases kept in Config.LeaseFile; a MAC keeps its address.
//     Non-PXE clients get plain leases.
//
// Every PC on the segment can send anything, with any MAC. So full mode
// leases only to admitted MACs: enrolled terminals (Config.Admit), MACs and
// prefixes the admin allows (Config.Allow), or all (Config.AllowAll). A
// client that is not admitted gets no answer; a PXE one is still reported
// to Seen so that an admin can enroll it. Proxy mode answers PXE clients
// that are not enrolled too: it gives no address, and their script boots
// their own disk. In both modes the requests of MACs that are not admitted
// pass token buckets, one per MAC and one for all of them, so a flood of
// invented MACs costs bounded work and log lines (Server.Stats counts what
// was refused). A RELEASE counts only from the lease holder (its MAC, its
// address as ciaddr and as the UDP source) and a DECLINE only for an address
// offered or leased to that MAC.
//
// Server.Handle is the whole protocol as a function of one request and its
// source address, so tests and the fuzzer call it directly; Server.Serve
// puts it on the network, bound to Config.Interface:
//
//	srv, err := dhcpd.New(dhcpd.Config{
//		Mode:      dhcpd.ModeProxy,
//		ServerIP:  netip.MustParseAddr("10.77.0.1"),
//		Interface: "enp3s0",
//		ScriptURL: func(mac net.HardwareAddr) string { return region.ScriptURL(mac) },
//		Seen:      region.RecordTerminal,
//		Admit:     region.Enrolled,
//		Log:       log,
//	})
//	if err != nil {
//		return err
//	}
//	g.Go(func() error { return srv.Serve(ctx) })
//
// docs/boot.md ("DHCP") tells admins which mode to choose.
package dhcpd
