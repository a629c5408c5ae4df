package dhcpd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// A lease binds a MAC to an address. Bindings outlive their expiry so that a
// terminal gets the same address next time; an expired binding is reclaimed
// for another MAC only when the pool has no unused address left.
type lease struct {
	MAC     string     `json:"mac"` // "" for an address a client declined
	IP      netip.Addr `json:"ip"`
	Expires time.Time  `json:"expires"`
	// Bound is false while the address is only offered.
	Bound bool `json:"bound"`
}

// leases is the full-mode lease table. The Server's mutex guards it.
type leases struct {
	pool  Pool
	file  string
	byMAC map[string]*lease
	byIP  map[netip.Addr]*lease
}

// leaseFile is the on-disk form of the table.
type leaseFile struct {
	Version int      `json:"version"`
	Leases  []*lease `json:"leases"`
}

// maxLeaseFile bounds the lease file: a full pool of maxPoolSize leases
// takes about 8 MiB as MarshalIndent writes it.
const maxLeaseFile = 16 << 20

// leaseFileVersion is the Version this package writes and reads.
const leaseFileVersion = 1

// loadLeases reads file if it exists. Leases outside the pool (the admin
// changed it) are dropped. A file that is too large or not a lease file
// stops the start with an error that says so; the admin moves it away.
func loadLeases(pool Pool, file string) (*leases, []netip.Addr, error) {
	t := newLeases(pool, file)
	if file == "" {
		return t, nil, nil
	}
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read dhcp lease file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLeaseFile+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read dhcp lease file: %w", err)
	}
	t, dropped, err := parseLeases(pool, b)
	if err != nil {
		return nil, nil, fmt.Errorf("dhcp lease file %s (move it away to start without leases): %w", file, err)
	}
	t.file = file
	return t, dropped, nil
}

// ErrLeaseFile is wrapped by the errors of a lease file that is not one.
var ErrLeaseFile = errors.New("not a tms lease file")

// parseLeases reads the lease file's contents b. Every lease must carry a
// MAC as aa:bb:cc:dd:ee:ff (or none, for a declined address) and an IPv4
// address; the first one that does not stops the parse. Leases outside the
// pool, and second leases of an address or a MAC, are dropped and returned.
func parseLeases(pool Pool, b []byte) (*leases, []netip.Addr, error) {
	if len(b) > maxLeaseFile {
		return nil, nil, fmt.Errorf("%w: larger than %d bytes", ErrLeaseFile, maxLeaseFile)
	}
	var lf leaseFile
	if err := json.Unmarshal(b, &lf); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrLeaseFile, err)
	}
	if lf.Version != leaseFileVersion {
		return nil, nil, fmt.Errorf("%w: version %d, want %d", ErrLeaseFile, lf.Version, leaseFileVersion)
	}
	if len(lf.Leases) > maxPoolSize {
		return nil, nil, fmt.Errorf("%w: %d leases, more than a pool can hold (%d)", ErrLeaseFile, len(lf.Leases), maxPoolSize)
	}
	t := newLeases(pool, "")
	var dropped []netip.Addr
	for i, l := range lf.Leases {
		if l == nil {
			return nil, nil, fmt.Errorf("%w: lease %d is null", ErrLeaseFile, i)
		}
		if !l.IP.Is4() {
			return nil, nil, fmt.Errorf("%w: lease %d: address %q is not IPv4", ErrLeaseFile, i, l.IP)
		}
		if l.MAC != "" {
			hw, err := net.ParseMAC(l.MAC)
			if err != nil || len(hw) != 6 || hw.String() != l.MAC {
				return nil, nil, fmt.Errorf("%w: lease %d: %q is not a MAC like aa:bb:cc:dd:ee:ff", ErrLeaseFile, i, l.MAC)
			}
		}
		if !pool.contains(l.IP) || t.byIP[l.IP] != nil || (l.MAC != "" && t.byMAC[l.MAC] != nil) {
			dropped = append(dropped, l.IP)
			continue
		}
		t.add(l)
	}
	return t, dropped, nil
}

func newLeases(pool Pool, file string) *leases {
	return &leases{pool: pool, file: file, byMAC: map[string]*lease{}, byIP: map[netip.Addr]*lease{}}
}

func (t *leases) add(l *lease) {
	t.byIP[l.IP] = l
	if l.MAC != "" {
		t.byMAC[l.MAC] = l
	}
}

func (t *leases) remove(l *lease) {
	delete(t.byIP, l.IP)
	if l.MAC != "" && t.byMAC[l.MAC] == l {
		delete(t.byMAC, l.MAC)
	}
}

// declined counts the addresses held declined now.
func (t *leases) declined(now time.Time) int {
	n := 0
	for _, l := range t.byIP {
		if l.MAC == "" && l.Expires.After(now) {
			n++
		}
	}
	return n
}

// free says whether ip can go to mac now.
func (t *leases) free(ip netip.Addr, mac string, now time.Time) bool {
	l := t.byIP[ip]
	return l == nil || l.MAC == mac || l.Expires.Before(now)
}

// allocate finds an address for mac: its own binding first, then the
// address it asks for, then one never used, then the binding that expired
// longest ago. It reports false when the pool is exhausted. The lease it
// returns is in the table, but not yet bound.
func (t *leases) allocate(mac string, want netip.Addr, exclude []netip.Addr, now time.Time) (*lease, bool) {
	if l := t.byMAC[mac]; l != nil {
		return l, true
	}
	if t.pool.contains(want) && !slices.Contains(exclude, want) && t.byIP[want] == nil {
		return t.take(mac, want, now), true
	}
	for ip := t.pool.Start; t.pool.contains(ip); ip = ip.Next() {
		if !slices.Contains(exclude, ip) && t.byIP[ip] == nil {
			return t.take(mac, ip, now), true
		}
	}
	var oldest *lease
	for _, l := range t.byIP {
		if l.Expires.Before(now) && (oldest == nil || l.Expires.Before(oldest.Expires)) {
			oldest = l
		}
	}
	if oldest == nil {
		return nil, false
	}
	t.remove(oldest)
	return t.take(mac, oldest.IP, now), true
}

// offerHold is how long an offered address stays reserved for a client that
// has not requested it yet.
const offerHold = time.Minute

func (t *leases) take(mac string, ip netip.Addr, now time.Time) *lease {
	l := &lease{MAC: mac, IP: ip, Expires: now.Add(offerHold)}
	t.add(l)
	return l
}

// save writes the table atomically: a temporary file in the same directory,
// fsync, rename, fsync of the directory. A crash leaves the old or the new
// table, never half of one.
func (t *leases) save() error {
	if t.file == "" {
		return nil
	}
	lf := leaseFile{Version: leaseFileVersion}
	for _, l := range t.byIP {
		lf.Leases = append(lf.Leases, l)
	}
	slices.SortFunc(lf.Leases, func(a, b *lease) int { return a.IP.Compare(b.IP) })
	b, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode dhcp leases: %w", err)
	}
	dir := filepath.Dir(t.file)
	f, err := os.CreateTemp(dir, filepath.Base(t.file)+".tmp*")
	if err != nil {
		return fmt.Errorf("save dhcp leases: %w", err)
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save dhcp leases: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save dhcp leases: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save dhcp leases: %w", err)
	}
	if err := os.Rename(f.Name(), t.file); err != nil {
		return fmt.Errorf("save dhcp leases: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
