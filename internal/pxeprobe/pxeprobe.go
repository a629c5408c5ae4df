// Package pxeprobe boots a terminal as far as the network decides it, for tests that run in a
// network namespace: it sends the DHCPDISCOVER iPXE sends (PXE vendor class, user class
// "iPXE"), collects every offer for a while, and fetches the iPXE script the answering server
// names, whose kernel command line says which region server the terminal's agent will talk
// to (tms.region=…). What remains of a boot (the kernel, the initrd) is the same from any
// server; which server answers is what a region with several servers decides.
//
// A process cannot bind a DHCP client port in another namespace, so Probe runs in the
// terminal's namespace: tests run their own binary again there (e2e's multi-server test).
package pxeprobe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Offer is one server's answer to the DISCOVER.
type Offer struct {
	Server   netip.Addr // the answering server (siaddr, else option 54)
	BootFile string     // option 67: for iPXE, the URL of its script
}

// Probe sends an iPXE DISCOVER for mac on iface, again every half second, and returns the
// distinct offers it got within wait (none is not an error).
func Probe(ctx context.Context, iface string, mac net.HardwareAddr, wait time.Duration) ([]Offer, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: dhcpv4.ClientPort})
	if err != nil {
		return nil, fmt.Errorf("pxeprobe: DHCP client socket on %s: %w", iface, err)
	}
	defer conn.Close()
	req, err := dhcpv4.NewDiscovery(mac,
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 0}),
		dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionBootfileName, dhcpv4.OptionTFTPServerName, dhcpv4.OptionVendorSpecificInformation))
	if err != nil {
		return nil, err
	}
	to := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	end := time.Now().Add(wait)
	seen := map[Offer]bool{}
	var offers []Offer
	buf := make([]byte, 1500)
	for time.Now().Before(end) && ctx.Err() == nil {
		if _, err := conn.WriteTo(req.ToBytes(), to); err != nil {
			return nil, fmt.Errorf("pxeprobe: send DISCOVER on %s: %w", iface, err)
		}
		next := time.Now().Add(500 * time.Millisecond)
		for {
			conn.SetReadDeadline(next)
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				break
			}
			reply, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || reply.TransactionID != req.TransactionID || reply.MessageType() != dhcpv4.MessageTypeOffer {
				continue
			}
			o := Offer{BootFile: reply.BootFileName}
			if f := reply.Options.Get(dhcpv4.OptionBootfileName); len(f) > 0 {
				o.BootFile = string(f)
			}
			o.Server, _ = netip.AddrFromSlice(reply.ServerIPAddr.To4())
			if !o.Server.IsValid() || o.Server.IsUnspecified() {
				o.Server, _ = netip.AddrFromSlice(reply.ServerIdentifier().To4())
			}
			if !seen[o] {
				seen[o] = true
				offers = append(offers, o)
			}
		}
	}
	return offers, ctx.Err()
}

// regionArg is the agent's region on the script's kernel command line.
var regionArg = regexp.MustCompile(`\btms\.region=(\S+)`)

// Region fetches the iPXE script at url and returns the region URL its kernel command line
// gives the agent.
func Region(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("pxeprobe: %s: %s: %s", url, resp.Status, b)
	}
	m := regionArg.FindSubmatch(b)
	if m == nil {
		return "", errors.New("pxeprobe: the iPXE script names no tms.region:\n" + string(b))
	}
	return string(m[1]), nil
}

// ChildEnv names the environment variable that carries a Request to a probe run in a
// terminal's namespace (Child).
const ChildEnv = "TMS_PXE_PROBE"

// Request is what a probe child is asked.
type Request struct {
	Interface string        `json:"interface"`
	MAC       string        `json:"mac"`
	Wait      time.Duration `json:"wait"`
}

// Boot is what a probe child found: the offers, and the region URL the first offer's script
// gives the agent ("" when the script boots the local disk: no task), else that server's
// HTTP service (the script URL's scheme and host).
type Boot struct {
	Offers []Offer `json:"offers"`
	Region string  `json:"region"`
	Task   bool    `json:"task"` // the script holds a task (tms.region was on its command line)
}

// Child runs the probe ChildEnv asks for, if any, and writes its Boot as JSON to stdout; it
// reports whether it ran. Tests call it first thing in the test function they run again in a
// terminal's namespace.
func Child(ctx context.Context) (bool, error) {
	v := os.Getenv(ChildEnv)
	if v == "" {
		return false, nil
	}
	var r Request
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return true, fmt.Errorf("pxeprobe: %s: %w", ChildEnv, err)
	}
	mac, err := net.ParseMAC(r.MAC)
	if err != nil {
		return true, err
	}
	offers, err := Probe(ctx, r.Interface, mac, r.Wait)
	if err != nil {
		return true, err
	}
	b := Boot{Offers: offers}
	if len(offers) > 0 {
		b.Region, err = Region(ctx, offers[0].BootFile)
		b.Task = err == nil
		if err != nil {
			u, perr := url.Parse(offers[0].BootFile)
			if perr != nil || u.Host == "" {
				return true, fmt.Errorf("pxeprobe: boot file %q is not a script URL", offers[0].BootFile)
			}
			b.Region = u.Scheme + "://" + u.Host
		}
	}
	return true, json.NewEncoder(os.Stdout).Encode(b)
}
