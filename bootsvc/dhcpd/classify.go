package dhcpd

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// client is what a request says about the machine that sent it.
type client struct {
	pxe  bool // firmware PXE ROM or iPXE
	ipxe bool // iPXE: give it the HTTP script, not another iPXE binary
	arch Arch
}

// PXE and iPXE options that DHCPv4 does not name.
const (
	optUserClass  = 77  // RFC 3004; iPXE sends the bare string "iPXE"
	optIPXE       = 175 // iPXE encapsulated options
	optClientArch = 93  // RFC 4578
	optUUID       = 97  // RFC 4578 client machine identifier
)

// classify reads options 60, 77, 93 and 175 of a request.
func classify(req *dhcpv4.DHCPv4) client {
	var c client
	vc := req.ClassIdentifier() // option 60
	c.ipxe = req.Options.Has(dhcpv4.GenericOptionCode(optIPXE)) || hasIPXEUserClass(req)
	c.pxe = strings.HasPrefix(vc, "PXEClient") || c.ipxe
	c.arch = arch(req, vc)
	return c
}

func hasIPXEUserClass(req *dhcpv4.DHCPv4) bool {
	raw := req.Options.Get(dhcpv4.GenericOptionCode(optUserClass))
	if string(raw) == "iPXE" {
		return true
	}
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			return true
		}
	}
	return false
}

// arch is the first architecture in option 93. Old ROMs leave the option
// out and name the architecture in the vendor class only
// ("PXEClient:Arch:00007:UNDI:003016"); without either, the client is a BIOS.
func arch(req *dhcpv4.DHCPv4, vendorClass string) Arch {
	if v := req.Options.Get(dhcpv4.GenericOptionCode(optClientArch)); len(v) >= 2 {
		return Arch(binary.BigEndian.Uint16(v))
	}
	if rest, ok := strings.CutPrefix(vendorClass, "PXEClient:Arch:"); ok && len(rest) >= 5 {
		if n, err := strconv.ParseUint(rest[:5], 10, 16); err == nil {
			return Arch(n)
		}
	}
	return ArchBIOS
}
