package bootsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"tms/bootsvc/dhcpd"
	"tms/bootsvc/tftpd"
	"tms/config"
	"tms/metrics"
	"tms/state"
	"tms/store"
)

// ServiceOptions configure a region's boot service.
type ServiceOptions struct {
	Boot      config.Boot
	Inventory *state.Inventory
	// Claims claims terminals' boots into their tasks (the region's agent API).
	Claims Claimer
	// Endpoint is where iPXE reaches the scripts and boot files (plain HTTP).
	Endpoint string
	// AgentEndpoint is the region's agent API as the in-memory OS reaches it; empty: Endpoint.
	AgentEndpoint string
	// DataDir is the region's data directory: leases, and the default boot environment.
	DataDir string
	Log     *slog.Logger
	// Ports, for tests (0: the standard ones, 67, 4011 and 69).
	DHCPPort, ProxyPort, TFTPPort int
	// ListenIP overrides where DHCP listens (tests on loopback).
	ListenIP netip.Addr
	// Metrics counts DHCP and TFTP requests by result; nil counts nothing.
	Metrics *metrics.Region
	// Answer, in proxy mode, says whether this server answers a PC's boot: a region with
	// several servers answers each PC from one (dhcpd.Config.Answer). Nil answers all.
	Answer func(mac net.HardwareAddr) bool
	// BootEnvs serves published versions of the in-memory OS (Scripts.BootEnvs); nil: only the
	// boot directory.
	BootEnvs BootEnvs
}

// Service is a region's running boot service.
type Service struct {
	Scripts *Scripts
	Waker   *Waker

	dhcp *dhcpd.Server // nil when region.boot.dhcp is off

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// StartService starts DHCP (unless region.boot.dhcp is off) and TFTP on the terminals'
// interface. The caller serves the scripts (Service.Scripts.Routes) on the region's HTTP
// service and uses Service.Waker for Wake-on-LAN.
func StartService(ctx context.Context, o ServiceOptions) (*Service, error) {
	b := o.Boot
	st, err := b.Settings()
	if err != nil {
		return nil, err
	}
	if !st.Address.IsValid() {
		return nil, errors.New("region.boot.address: is required")
	}
	if o.Claims == nil {
		return nil, errors.New("the boot service needs the agent API to claim terminals' boots")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := b.Dir
	if dir == "" {
		dir = filepath.Join(o.DataDir, "bootenv")
	}
	s := &Service{
		Scripts: &Scripts{Inventory: o.Inventory, Claims: o.Claims, Endpoint: o.Endpoint, AgentEndpoint: o.AgentEndpoint, BootDir: dir, Args: b.KernelArgs, BootEnvs: o.BootEnvs, Log: log.With("part", "scripts")},
		Waker:   &Waker{Interface: b.Interface},
		errs:    make(chan error, 2),
	}
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	seen := func(mac net.HardwareAddr, ip netip.Addr) {
		addr := ""
		if ip.IsValid() && !ip.IsUnspecified() {
			addr = ip.String()
		}
		if err := o.Inventory.Seen(context.Background(), mac.String(), addr, s.Scripts.now()); err != nil {
			log.Warn("could not record a terminal as seen", "mac", mac.String(), "err", err)
		}
	}
	if b.DHCP != "off" {
		mode := dhcpd.ModeProxy
		if b.DHCP == "full" {
			mode = dhcpd.ModeFull
		}
		cfg := dhcpd.Config{Mode: mode, ServerIP: st.Address, Interface: b.Interface, ScriptURL: s.Scripts.ScriptURL, Seen: seen,
			Admit: enrolled(ctx, o.Inventory), Allow: st.DHCPAllow, AllowAll: st.DHCPAllowAll,
			UnknownPerMAC: b.DHCPUnknownPerMAC, UnknownTotal: b.DHCPUnknownTotal,
			ListenIP: o.ListenIP, Port: o.DHCPPort, ProxyPort: o.ProxyPort, Log: log.With("part", "dhcp"), Answer: o.Answer}
		if o.Metrics != nil {
			cfg.Meter = o.Metrics
		}
		if mode == dhcpd.ModeFull {
			cfg.Pool = dhcpd.Pool{Start: st.PoolStart, End: st.PoolEnd}
			cfg.Netmask = net.CIDRMask(st.Subnet.Bits(), 32)
			cfg.Router, cfg.DNS, cfg.LeaseTime = st.Router, st.DNS, b.LeaseTime
			cfg.LeaseFile = filepath.Join(o.DataDir, "dhcp-leases.json")
		}
		d, err := dhcpd.New(cfg)
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("region.boot: %w", err)
		}
		s.dhcp = d
		s.run(func() error { return d.Serve(ctx) })
	}
	t := &tftpd.Server{Dir: b.TFTPDir, Log: log.With("part", "tftp")}
	if o.Metrics != nil {
		t.Meter = o.Metrics
	}
	if filepath.Clean(b.TFTPDir) == tftpd.DefaultDir {
		// Debian's ipxe.efi there is a symlink into /boot: without this, UEFI PCs get no iPXE.
		t.LinkDirs = tftpd.DefaultLinkDirs
	}
	port := o.TFTPPort
	if port == 0 {
		port = 69
	}
	addr := netip.AddrPortFrom(st.Address, uint16(port)).String()
	if o.ListenIP.IsValid() {
		addr = netip.AddrPortFrom(o.ListenIP, uint16(port)).String()
	}
	s.run(func() error { return t.ListenAndServe(ctx, addr) })
	log.Info("boot service started", "interface", b.Interface, "address", st.Address, "dhcp", b.DHCP, "tftp", addr, "bootenv", dir)
	return s, nil
}

// SetDHCPLimits changes the rate limits of the DHCP requests of MACs that are not admitted
// (region.boot.dhcp_unknown_per_mac, a minute, and dhcp_unknown_total, a second) while the
// service runs. Without DHCP it does nothing.
func (s *Service) SetDHCPLimits(perMAC, total int) {
	if s.dhcp != nil {
		s.dhcp.SetUnknownLimits(perMAC, total)
	}
}

// enrolled admits the MACs of the region's enrolled terminals to DHCP. A MAC the inventory
// does not know is not admitted; an inventory that cannot answer is an error, which dhcpd
// counts and logs and answers with silence.
func enrolled(ctx context.Context, inv *state.Inventory) func(net.HardwareAddr) (bool, error) {
	return func(mac net.HardwareAddr) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		t, err := inv.Terminal(ctx, mac.String())
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("look up terminal %s: %w", mac, err)
		}
		return t.Enrolled, nil
	}
}

func (s *Service) run(f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			s.errs <- err
		}
	}()
}

// Err returns a channel that carries the first failure of DHCP or TFTP.
func (s *Service) Err() <-chan error { return s.errs }

// Stop stops DHCP and TFTP and waits for them.
func (s *Service) Stop() {
	s.cancel()
	s.wg.Wait()
}

// Routes serves the scripts and boot files.
func (s *Service) Routes(mux *http.ServeMux) { s.Scripts.Routes(mux) }
