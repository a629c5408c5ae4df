package state

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/store"
)

func openInv(t *testing.T) *Inventory {
	t.Helper()
	inv, err := OpenInventory(context.Background(), testDB(t, "region.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	return inv
}

func TestNormalizeMAC(t *testing.T) {
	for in, want := range map[string]string{
		"AA:BB:CC:DD:EE:FF": "aa:bb:cc:dd:ee:ff",
		"aa-bb-cc-dd-ee-ff": "aa:bb:cc:dd:ee:ff",
		"aabb.ccdd.eeff":    "aa:bb:cc:dd:ee:ff",
		"aa:bb:cc:dd:ee":    "",
		"zz:bb:cc:dd:ee:ff": "",
		"":                  "",
		"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01": "",
	} {
		got, err := NormalizeMAC(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("NormalizeMAC(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestTerminalsAndGroups(t *testing.T) { forEachBackend(t, testTerminalsAndGroups) }

func testTerminalsAndGroups(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	now := time.Now()
	if err := inv.Seen(ctx, "AA:BB:CC:00:00:01", "10.0.0.5", now); err != nil {
		t.Fatal(err)
	}
	term, err := inv.Terminal(ctx, "aa:bb:cc:00:00:01")
	if err != nil || term.Enrolled || term.LastIP != "10.0.0.5" {
		t.Fatalf("seen terminal: %+v, %v", term, err)
	}
	if err := inv.Enroll(ctx, "aa:bb:cc:00:00:01", "pc-01"); err != nil {
		t.Fatal(err)
	}
	if err := inv.Enroll(ctx, "aa:bb:cc:00:00:02", "pc-01"); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	inv.Enroll(ctx, "aa:bb:cc:00:00:02", "pc-02")
	inv.Seen(ctx, "aa:bb:cc:00:00:03", "10.0.0.7", now)
	if term, err := inv.Terminal(ctx, "pc-01"); err != nil || !term.Enrolled || term.LastIP != "10.0.0.5" {
		t.Fatalf("by name: %+v, %v", term, err)
	}
	if _, err := inv.Terminal(ctx, "pc-99"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown terminal: %v", err)
	}
	if err := inv.CreateGroup(ctx, "room-12"); err != nil {
		t.Fatal(err)
	}
	if err := inv.CreateGroup(ctx, "room-12"); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate group: %v", err)
	}
	if err := inv.CreateGroup(ctx, "../x"); err == nil {
		t.Fatal("bad group name accepted")
	}
	if err := inv.AddToGroup(ctx, "room-12", "pc-01", "aa:bb:cc:00:00:02"); err != nil {
		t.Fatal(err)
	}
	if err := inv.AddToGroup(ctx, "room-12", "aa:bb:cc:00:00:03"); err == nil {
		t.Fatal("a terminal that is not enrolled was added to a group")
	}
	if err := inv.AddToGroup(ctx, "room-99", "pc-01"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
	m, err := inv.Members(ctx, "room-12")
	if err != nil || len(m) != 2 || m[0].Name != "pc-01" {
		t.Fatalf("members: %+v, %v", m, err)
	}
	all, _ := inv.Terminals(ctx)
	if len(all) != 3 || !all[0].Enrolled || all[2].Enrolled {
		t.Fatalf("terminals: %+v", all)
	}
}

func TestBootActions(t *testing.T) { forEachBackend(t, testBootActions) }

func testBootActions(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	now := time.Now()
	inv.Enroll(ctx, "aa:bb:cc:00:00:01", "pc-01")
	if a, err := inv.BootAction(ctx, "aa:bb:cc:00:00:01", now); err != nil || a.Action != "local" {
		t.Fatalf("default boot action: %+v, %v", a, err)
	}
	err := inv.SetBootAction(ctx, "aa:bb:cc:00:00:01", BootAction{Action: "deploy", Task: "deploy/r/pc-01/win11", Version: "win11", Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := inv.BootAction(ctx, "AA:BB:CC:00:00:01", now)
	if err != nil || a.Action != "deploy" || a.Version != "win11" || a.Image != "" {
		t.Fatalf("boot action: %+v, %v", a, err)
	}
	if a, _ := inv.BootAction(ctx, "aa:bb:cc:00:00:01", now.Add(2*time.Hour)); a.Action != "local" {
		t.Fatalf("expired boot action still %s", a.Action)
	}
	if err := inv.SetBootAction(ctx, "aa:bb:cc:00:00:09", BootAction{Action: "capture"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("boot action for an unknown terminal: %v", err)
	}
	if err := inv.SetBootAction(ctx, "aa:bb:cc:00:00:01", BootAction{Action: "format"}); err == nil {
		t.Fatal("unknown action accepted")
	}
}

func TestInventoryConcurrentSeen(t *testing.T) { forEachBackend(t, testInventoryConcurrentSeen) }

func testInventoryConcurrentSeen(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 25 {
				mac := []byte("aa:bb:cc:00:00:00")
				mac[16] = "0123456789"[j%10]
				mac[13] = "01234567"[i]
				if err := inv.Seen(ctx, string(mac), "10.0.0.1", time.Now()); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestSetDisk(t *testing.T) { forEachBackend(t, testSetDisk) }

func testSetDisk(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	if err := inv.SetDisk(ctx, "aa:bb:cc:00:00:09", "/dev/sda", 1<<30); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown terminal: %v", err)
	}
	inv.Seen(ctx, "aa:bb:cc:00:00:09", "10.0.0.9", time.Now())
	if err := inv.SetDisk(ctx, "aa:bb:cc:00:00:09", "/dev/sda", -1); err == nil {
		t.Fatal("negative size accepted")
	}
	if err := inv.SetDisk(ctx, "AA:BB:CC:00:00:09", "/dev/sda", 1<<30); err != nil {
		t.Fatal(err)
	}
	if term, err := inv.Terminal(ctx, "aa:bb:cc:00:00:09"); err != nil || term.Disk != "/dev/sda" || term.DiskSize != 1<<30 {
		t.Fatalf("terminal %+v, %v", term, err)
	}
}

func countUnknown(t *testing.T, inv *Inventory) int {
	t.Helper()
	var n int
	if err := inv.db.QueryRow(`SELECT COUNT(*) FROM terminals WHERE enrolled = 0`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSeenBoundsUnknownMACs feeds Seen 100k random MACs, as a host forging MACs on a classroom
// network would: the inventory keeps at most MaxUnknownTerminals not-enrolled terminals, the
// most recently seen, and keeps every enrolled terminal and every terminal with a boot action,
// a task or a group.
func TestSeenBoundsUnknownMACs(t *testing.T) { forEachBackend(t, testSeenBoundsUnknownMACs) }

func testSeenBoundsUnknownMACs(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	start := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return start.Add(time.Duration(i) * time.Millisecond) }

	inv.Enroll(ctx, "02:00:00:00:00:01", "pc-01")
	inv.Enroll(ctx, "02:00:00:00:00:02", "pc-02")
	inv.CreateGroup(ctx, "lab")
	inv.AddToGroup(ctx, "lab", "pc-02")
	// Not enrolled, but with admin work attached: never dropped.
	inv.Seen(ctx, "02:00:00:00:00:03", "10.0.0.3", at(0))
	if err := inv.SetBootAction(ctx, "02:00:00:00:00:03", BootAction{Action: "capture", Task: "t3"}); err != nil {
		t.Fatal(err)
	}
	inv.Seen(ctx, "02:00:00:00:00:04", "10.0.0.4", at(0))
	if _, err := inv.StartTask(ctx, Task{ID: "t4", MAC: "02:00:00:00:00:04", Kind: "deploy", Image: "x"}, at(0)); err != nil {
		t.Fatal(err)
	}

	const n = 10 * MaxUnknownTerminals // ten times the bound: 4 s, 40 s under the race detector
	macs := make([]string, n)
	for i := range macs {
		b := make([]byte, 6)
		rand.Read(b)
		b[0] = b[0]&^1 | 2 // unicast, locally administered: never one of the fixed ones above
		b[5] |= 0x10
		macs[i] = net.HardwareAddr(b).String()
		if err := inv.Seen(ctx, macs[i], "10.9.9.9", at(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := countUnknown(t, inv); got > MaxUnknownTerminals {
		t.Errorf("%d not-enrolled terminals after %d random MACs; at most %d", got, n, MaxUnknownTerminals)
	}
	for _, mac := range []string{"02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03", "02:00:00:00:00:04"} {
		if _, err := inv.Terminal(ctx, mac); err != nil {
			t.Errorf("terminal %s dropped: %v", mac, err)
		}
	}
	if m, err := inv.Members(ctx, "lab"); err != nil || len(m) != 1 {
		t.Errorf("group lab: %v, %v", m, err)
	}
	// The most recently seen are the ones kept: an admin finds the PC that just booted.
	for _, mac := range macs[n-MaxUnknownTerminals+2:] {
		if _, err := inv.Terminal(ctx, mac); err != nil {
			t.Fatalf("recently seen %s dropped: %v", mac, err)
		}
	}
	if _, err := inv.Terminal(ctx, macs[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("first random MAC still kept: %v", err)
	}
	ts, err := inv.Terminals(ctx)
	if err != nil || len(ts) > MaxUnknownTerminals+2 {
		t.Errorf("listing has %d terminals, %v", len(ts), err)
	}
}

func TestSeenExpiresUnknownMACs(t *testing.T) { forEachBackend(t, testSeenExpiresUnknownMACs) }

func testSeenExpiresUnknownMACs(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		setup    func(inv *Inventory, mac string)
		lastSeen time.Duration // before the new sighting
		kept     bool
	}{
		{"unknown seen 8 days ago is dropped", nil, 8 * 24 * time.Hour, false},
		{"unknown seen 6 days ago is kept", nil, 6 * 24 * time.Hour, true},
		{"enrolled seen 30 days ago is kept", func(inv *Inventory, mac string) { inv.Enroll(ctx, mac, "pc-9") }, 30 * 24 * time.Hour, true},
		{"unknown with a boot action is kept", func(inv *Inventory, mac string) {
			inv.SetBootAction(ctx, mac, BootAction{Action: "deploy", Task: "t"})
		}, 30 * 24 * time.Hour, true},
		{"unknown with a task is kept", func(inv *Inventory, mac string) {
			inv.StartTask(ctx, Task{ID: "t", MAC: mac, Kind: "capture", Image: "x"}, start)
		}, 30 * 24 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := openInv(t)
			const mac = "aa:bb:cc:00:00:01"
			if err := inv.Seen(ctx, mac, "10.0.0.1", start); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(inv, mac)
			}
			// A new MAC shows up later; the old one has been silent since start.
			if err := inv.Seen(ctx, "aa:bb:cc:00:00:02", "10.0.0.2", start.Add(tc.lastSeen)); err != nil {
				t.Fatal(err)
			}
			_, err := inv.Terminal(ctx, mac)
			if kept := err == nil; kept != tc.kept {
				t.Errorf("kept = %v (%v), want %v", kept, err, tc.kept)
			}
			if _, err := inv.Terminal(ctx, "aa:bb:cc:00:00:02"); err != nil {
				t.Errorf("new sighting: %v", err)
			}
		})
	}
}

func TestSeenRefusesBadInput(t *testing.T) { forEachBackend(t, testSeenRefusesBadInput) }

func testSeenRefusesBadInput(t *testing.T) {
	inv := openInv(t)
	for name, tc := range map[string]struct{ mac, ip string }{
		"malformed MAC":     {"aa:bb", "10.0.0.1"},
		"oversized address": {"aa:bb:cc:00:00:01", strings.Repeat("1", 65)},
	} {
		if err := inv.Seen(context.Background(), tc.mac, tc.ip, time.Now()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := countUnknown(t, inv); n != 0 {
		t.Errorf("%d terminals recorded from bad input", n)
	}
}

// TestCountTerminals checks that only enrolled terminals count, and online only those seen
// since the time asked, with 2,000 terminals counted well within a scrape's time.
func TestCountTerminals(t *testing.T) { forEachBackend(t, testCountTerminals) }

func testCountTerminals(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	now := time.Now()
	const n = 2000
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		seen := now.Add(-time.Hour)
		if i%4 == 0 {
			seen = now
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO terminals (mac, name, enrolled, last_seen) VALUES (?, ?, 1, ?)`,
			net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}.String(), "pc"+strconv.Itoa(i), seen.UTC().UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// Seen but not enrolled: counted in neither.
	if err := inv.Seen(ctx, "52:54:00:00:00:01", "10.0.0.9", now); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, err := inv.CountTerminals(ctx, now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("counting %d terminals took %v", n, took)
	}
	if c != (TerminalCounts{Enrolled: n, Online: n / 4}) {
		t.Fatalf("CountTerminals = %+v, want %d enrolled, %d online", c, n, n/4)
	}
	if c, _ := inv.CountTerminals(ctx, now.Add(time.Minute)); c.Online != 0 {
		t.Fatalf("online since a minute from now: %d", c.Online)
	}
}
