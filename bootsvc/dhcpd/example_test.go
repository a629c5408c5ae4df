package dhcpd_test

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"tms/bootsvc/dhcpd"
)

// A proxyDHCP server answers a BIOS PXE ROM with the iPXE binary to fetch
// over TFTP, and then iPXE with the URL of its script; it gives neither an
// address.
func Example() {
	srv, err := dhcpd.New(dhcpd.Config{
		Mode:     dhcpd.ModeProxy,
		ServerIP: netip.MustParseAddr("10.77.0.1"),
		ScriptURL: func(mac net.HardwareAddr) string {
			return "http://10.77.0.1:8080/boot/" + mac.String() + ".ipxe?key=per-boot-secret"
		},
		Seen: func(mac net.HardwareAddr, ip netip.Addr) { fmt.Println("seen", mac) },
	})
	if err != nil {
		panic(err)
	}
	pc, _ := net.ParseMAC("52:54:00:12:34:56")
	rom, _ := dhcpv4.NewDiscovery(pc,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
	ipxe, _ := dhcpv4.NewDiscovery(pc,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithUserClass("iPXE", false))

	for _, req := range []*dhcpv4.DHCPv4{rom, ipxe} {
		reply, err := srv.Handle(req, netip.Addr{}) // from 0.0.0.0: the PC has no address yet
		if err != nil {
			panic(err)
		}
		fmt.Println(reply.MessageType(), reply.YourIPAddr, reply.ServerIPAddr, reply.BootFileName)
	}
	// Output:
	// seen 52:54:00:12:34:56
	// OFFER 0.0.0.0 10.77.0.1 undionly.kpxe
	// seen 52:54:00:12:34:56
	// OFFER 0.0.0.0 10.77.0.1 http://10.77.0.1:8080/boot/52:54:00:12:34:56.ipxe?key=per-boot-secret
}
