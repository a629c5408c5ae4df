package dhcpd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

// loadLeases reads file if it exists. Leases outside the pool (the admin
// changed it) are dropped.
func loadLeases(pool Pool, file string) (*leases, []netip.Addr, error) {
	t := &leases{pool: pool, file: file, byMAC: map[string]*lease{}, byIP: map[netip.Addr]*lease{}}
	if file == "" {
		return t, nil, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read dhcp lease file: %w", err)
	}
	var lf leaseFile
	if err := json.Unmarshal(b, &lf); err != nil {
		return nil, nil, fmt.Errorf("dhcp lease file %s: %w", file, err)
	}
	var dropped []netip.Addr
	for _, l := range lf.Leases {
		if l == nil || !pool.contains(l.IP) || t.byIP[l.IP] != nil || (l.MAC != "" && t.byMAC[l.MAC] != nil) {
			if l != nil {
				dropped = append(dropped, l.IP)
			}
			continue
		}
		t.add(l)
	}
	return t, dropped, nil
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
	lf := leaseFile{Version: 1}
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
