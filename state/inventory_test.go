package state

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tms/store"
)

func openInv(t *testing.T) *Inventory {
	t.Helper()
	inv, err := OpenInventory(context.Background(), filepath.Join(t.TempDir(), "region.db"))
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

func TestTerminalsAndGroups(t *testing.T) {
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

func TestBootActions(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	now := time.Now()
	inv.Enroll(ctx, "aa:bb:cc:00:00:01", "pc-01")
	if a, err := inv.BootAction(ctx, "aa:bb:cc:00:00:01", now); err != nil || a.Action != "local" {
		t.Fatalf("default boot action: %+v, %v", a, err)
	}
	err := inv.SetBootAction(ctx, "aa:bb:cc:00:00:01", BootAction{Action: "deploy", Task: "deploy/r/pc-01/win11", Image: "win11", Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := inv.BootAction(ctx, "AA:BB:CC:00:00:01", now)
	if err != nil || a.Action != "deploy" || a.Image != "win11" {
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

func TestInventoryConcurrentSeen(t *testing.T) {
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

func TestSetDisk(t *testing.T) {
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
