package state

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"tms/store"
)

// twoInvs opens two handles on one database file, as two servers of a region do.
func twoInvs(t *testing.T) (*Inventory, *Inventory) {
	t.Helper()
	path := testDB(t, "region.db")
	var out [2]*Inventory
	for i := range out {
		inv, err := OpenInventory(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inv.Close() })
		out[i] = inv
	}
	return out[0], out[1]
}

func TestServerRegistryAcrossHandles(t *testing.T) {
	forEachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		a, b := twoInvs(t)
		t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
		stale := StaleAfter(time.Second)
		sa := Server{ID: "srv-a", Labels: map[string]string{"room": "a"}, Endpoint: "http://10.0.0.1:8300", BootAddr: "10.0.0.1", DHCP: "proxy",
			Version: "v1", Started: t0, LastSeen: t0}
		sb := Server{ID: "srv-b", Labels: map[string]string{"room": "b"}, Endpoint: "http://10.0.0.2:8300", Version: "v2", Started: t0, LastSeen: t0}
		if err := a.Heartbeat(ctx, sa, stale); err != nil {
			t.Fatal(err)
		}
		if err := b.Heartbeat(ctx, sb, stale); err != nil {
			t.Fatal(err)
		}
		if err := b.SetServerBootEnv(ctx, "srv-b", "be-7"); err != nil {
			t.Fatal(err)
		}
		if err := b.SetServerBootEnv(ctx, "nobody", "be-7"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("boot env of an unknown server: %v, want not found", err)
		}
		sa.LastSeen = t0.Add(2 * time.Second)
		if err := a.Heartbeat(ctx, sa, stale); err != nil {
			t.Fatal(err)
		}
		got, err := b.Servers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != "srv-a" || got[1].ID != "srv-b" {
			t.Fatalf("servers = %+v, want srv-a and srv-b", got)
		}
		if !maps.Equal(got[0].Labels, sa.Labels) || got[0].Endpoint != sa.Endpoint || got[0].BootAddr != "10.0.0.1" || got[0].DHCP != "proxy" ||
			got[0].Version != "v1" || !got[0].LastSeen.Equal(sa.LastSeen) || !got[0].Started.Equal(t0) {
			t.Errorf("srv-a = %+v, want %+v", got[0], sa)
		}
		if got[1].BootEnv != "be-7" || len(got[1].Labels) != 1 {
			t.Errorf("srv-b = %+v, want boot env be-7", got[1])
		}
		// Stale detection: srv-b's last heartbeat is t0, srv-a's t0+2s.
		now := t0.Add(4 * time.Second)
		if !got[0].Healthy(now, stale) || got[1].Healthy(now, stale) {
			t.Errorf("at +4s with 3s staleness: srv-a healthy %v (want true), srv-b healthy %v (want false)",
				got[0].Healthy(now, stale), got[1].Healthy(now, stale))
		}
		// A heartbeat again (same process) keeps the row and moves LastSeen.
		sb.LastSeen = now
		if err := b.Heartbeat(ctx, sb, stale); err != nil {
			t.Fatal(err)
		}
		got, _ = a.Servers(ctx)
		if !got[1].Healthy(now, stale) || got[1].BootEnv != "" {
			t.Errorf("srv-b after its heartbeat = %+v: want healthy, and the boot env it reports (none)", got[1])
		}
	})
}

func TestHeartbeatRefusesADuplicateServerID(t *testing.T) {
	forEachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		a, b := twoInvs(t)
		t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
		stale := StaleAfter(time.Second)
		first := Server{ID: "pc-room", Endpoint: "http://10.0.0.1:8300", Started: t0, LastSeen: t0}
		if err := a.Heartbeat(ctx, first, stale); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name  string
			at    time.Duration
			taken bool
		}{
			{"while the first is healthy", 2 * time.Second, true},
			{"at the edge of staleness", 3 * time.Second, true},
			{"once the first is stale", 3*time.Second + time.Millisecond, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				second := Server{ID: "pc-room", Endpoint: "http://10.0.0.2:8300", Started: t0.Add(time.Millisecond), LastSeen: t0.Add(tc.at)}
				err := b.Heartbeat(ctx, second, stale)
				if tc.taken {
					if !errors.Is(err, ErrServerTaken) || !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "http://10.0.0.1:8300") ||
						!strings.Contains(err.Error(), "region.server_id") {
						t.Fatalf("second server: %v; want ErrServerTaken naming the first and region.server_id", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("second server after the first went stale: %v", err)
				}
				// The first, back, finds its id taken by the second.
				first.LastSeen = t0.Add(tc.at + time.Second)
				if err := a.Heartbeat(ctx, first, stale); !errors.Is(err, ErrServerTaken) {
					t.Fatalf("first server's heartbeat after the second took its id: %v, want ErrServerTaken", err)
				}
			})
		}
	})
}

func TestHeartbeatRefusesBadInput(t *testing.T) {
	inv := openInv(t)
	t0 := time.Now()
	for _, s := range []Server{
		{ID: "", Started: t0, LastSeen: t0},
		{ID: "Bad_ID", Started: t0, LastSeen: t0},
		{ID: "ok", Labels: map[string]string{"Room": "a"}, Started: t0, LastSeen: t0},
		{ID: "ok", Labels: map[string]string{"room": "a b"}, Started: t0, LastSeen: t0},
		{ID: "ok", Endpoint: strings.Repeat("x", 513), Started: t0, LastSeen: t0},
		{ID: "ok"},
	} {
		if err := inv.Heartbeat(context.Background(), s, time.Second); err == nil {
			t.Errorf("Heartbeat(%+v) = nil, want an error", s)
		}
	}
}

func TestSettingsVersionMovesAcrossHandles(t *testing.T) {
	forEachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		a, b := twoInvs(t)
		v0, err := b.SettingsVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.SetSetting(ctx, Setting{Key: "wake_timeout", Value: "5m0s", SetAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		v1, err := b.SettingsVersion(ctx)
		if err != nil || v1 == v0 {
			t.Fatalf("settings version after a push through the other handle: %d, %v (was %d); want it moved", v1, err, v0)
		}
	})
}

func TestGroupLabels(t *testing.T) {
	forEachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		a, b := twoInvs(t)
		for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"} {
			if err := a.Enroll(ctx, mac, "pc"+mac[len(mac)-1:]); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range []string{"alpha", "beta", "plain"} {
			if err := a.CreateGroup(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.AddToGroup(ctx, "alpha", "pc1", "pc2"); err != nil {
			t.Fatal(err)
		}
		if err := a.AddToGroup(ctx, "beta", "pc2"); err != nil {
			t.Fatal(err)
		}
		if err := a.AddToGroup(ctx, "plain", "pc3"); err != nil {
			t.Fatal(err)
		}
		got, err := a.SetGroupLabels(ctx, "alpha", LabelChange{Set: map[string]string{"room": "a", "rack": "1"}})
		if err != nil || !maps.Equal(got, map[string]string{"room": "a", "rack": "1"}) {
			t.Fatalf("alpha's labels = %v, %v", got, err)
		}
		if _, err := b.SetGroupLabels(ctx, "beta", LabelChange{Set: map[string]string{"room": "b", "floor": "2"}}); err != nil {
			t.Fatal(err)
		}
		tl, err := b.TerminalLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]map[string]string{
			"52:54:00:00:00:01": {"room": "a", "rack": "1"},
			// In alpha and beta: alpha (first by name) wins room; beta adds floor.
			"52:54:00:00:00:02": {"room": "a", "rack": "1", "floor": "2"},
		}
		if len(tl) != len(want) {
			t.Fatalf("terminal labels = %v, want %v (pc3's group has none)", tl, want)
		}
		for mac, w := range want {
			if !maps.Equal(tl[mac], w) {
				t.Errorf("labels of %s = %v, want %v", mac, tl[mac], w)
			}
		}
		// Remove a key, then clear and set.
		if got, err := a.SetGroupLabels(ctx, "alpha", LabelChange{Remove: []string{"rack", "absent"}}); err != nil || !maps.Equal(got, map[string]string{"room": "a"}) {
			t.Errorf("alpha after removing rack = %v, %v", got, err)
		}
		if got, err := a.SetGroupLabels(ctx, "alpha", LabelChange{Clear: true, Set: map[string]string{"site": "n"}}); err != nil || !maps.Equal(got, map[string]string{"site": "n"}) {
			t.Errorf("alpha after clear+set = %v, %v", got, err)
		}
		if got, err := a.SetGroupLabels(ctx, "alpha", LabelChange{Clear: true}); err != nil || len(got) != 0 || got == nil {
			t.Errorf("alpha after clear = %#v, %v; want an empty map", got, err)
		}
		all, err := b.GroupLabels(ctx)
		if err != nil || len(all) != 1 || all["beta"]["floor"] != "2" {
			t.Errorf("group labels = %v, %v; want beta's only", all, err)
		}
		// Refusals.
		if _, err := a.SetGroupLabels(ctx, "nosuch", LabelChange{Set: map[string]string{"room": "a"}}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("labels of an unknown group: %v, want not found", err)
		}
		if _, err := a.SetGroupLabels(ctx, "beta", LabelChange{Set: map[string]string{"Room!": "a"}}); err == nil || !strings.Contains(err.Error(), "label name") {
			t.Errorf("a bad label name: %v", err)
		}
		many := map[string]string{}
		for i := range MaxLabels {
			many["k"+string(rune('a'+i))] = "v"
		}
		if _, err := a.SetGroupLabels(ctx, "beta", LabelChange{Set: many}); err == nil || !strings.Contains(err.Error(), "at most") {
			t.Errorf("beta with %d+2 labels: %v, want refused", MaxLabels, err)
		}
		// A removed group's labels go with it.
		if _, err := a.RemoveGroup(ctx, "beta", true); err != nil {
			t.Fatal(err)
		}
		if all, err := b.GroupLabels(ctx); err != nil || len(all) != 0 {
			t.Errorf("labels after removing beta = %v, %v", all, err)
		}
	})
}

func TestCatalogKeepsEachRegionsLatestServers(t *testing.T) {
	forEachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		cat, err := OpenCatalog(ctx, testDB(t, "central.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		for _, id := range []string{"lab-1", "lab-2"} {
			if err := cat.UpsertRegion(ctx, Region{ID: id}); err != nil {
				t.Fatal(err)
			}
		}
		t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
		a := RegionServer{Server: Server{ID: "srv-a", Labels: map[string]string{"room": "a"}, Endpoint: "http://10.0.0.1:1", Version: "v1", BootEnv: "be1",
			Started: t0, LastSeen: t0}, Healthy: true}
		b := RegionServer{Server: Server{ID: "srv-b", Version: "v2", Started: t0, LastSeen: t0}}
		if err := cat.SetRegionServers(ctx, "lab-1", []RegionServer{a, b}, t0); err != nil {
			t.Fatal(err)
		}
		if err := cat.SetRegionServers(ctx, "lab-2", []RegionServer{b}, t0); err != nil {
			t.Fatal(err)
		}
		// A newer report replaces the list.
		if err := cat.SetRegionServers(ctx, "lab-2", []RegionServer{a}, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, err := cat.RegionServers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l := got["lab-1"]; len(l) != 2 || l[0].ID != "srv-a" || !l[0].Healthy || l[0].BootEnv != "be1" || l[0].Labels["room"] != "a" || l[1].Healthy || l[1].Version != "v2" {
			t.Errorf("lab-1 servers = %+v", l)
		}
		if l := got["lab-2"]; len(l) != 1 || l[0].ID != "srv-a" || !l[0].Reported.Equal(t0.Add(time.Minute)) {
			t.Errorf("lab-2 servers = %+v, want srv-a alone as reported at +1m", l)
		}
		if err := cat.SetRegionServers(ctx, "lab-9", []RegionServer{a}, t0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("servers of an unknown region: %v, want not found", err)
		}
		bad := a
		bad.ID = "Bad!"
		if err := cat.SetRegionServers(ctx, "lab-1", []RegionServer{bad}, t0); err == nil {
			t.Error("a server with a bad id was kept")
		}
	})
}

func TestReleaseServerLetsItsOwnRestartIn(t *testing.T) {
	forEachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		a, b := twoInvs(t)
		t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
		stale := StaleAfter(time.Second)
		first := Server{ID: "srv", Started: t0, LastSeen: t0}
		if err := a.Heartbeat(ctx, first, stale); err != nil {
			t.Fatal(err)
		}
		restart := Server{ID: "srv", Started: t0.Add(time.Second), LastSeen: t0.Add(time.Second)}
		// Releasing another process's claim changes nothing.
		if err := b.ReleaseServer(ctx, "srv", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := b.Heartbeat(ctx, restart, stale); !errors.Is(err, ErrServerTaken) {
			t.Fatalf("restart before releasing: %v, want ErrServerTaken", err)
		}
		if err := b.ReleaseServer(ctx, "srv", t0); err != nil {
			t.Fatal(err)
		}
		if err := b.Heartbeat(ctx, restart, stale); err != nil {
			t.Fatalf("restart after releasing its previous process's claim: %v", err)
		}
	})
}

func TestTwoProcessesStartingAtOnceOneTakesTheID(t *testing.T) {
	forEachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		for round := range 10 {
			a, b := twoInvs(t)
			t0 := time.Date(2026, 12, 3, 10, 0, round, 0, time.UTC)
			errs := make(chan error, 2)
			for i, inv := range []*Inventory{a, b} {
				go func() {
					at := t0.Add(time.Duration(i) * time.Millisecond)
					errs <- inv.Heartbeat(ctx, Server{ID: "srv", Started: at, LastSeen: at}, StaleAfter(time.Second))
				}()
			}
			var taken, ok int
			for range 2 {
				switch err := <-errs; {
				case err == nil:
					ok++
				case errors.Is(err, ErrServerTaken):
					taken++
				default:
					t.Fatal(err)
				}
			}
			if ok != 1 || taken != 1 {
				t.Fatalf("round %d: %d took the id, %d were refused; want one each", round, ok, taken)
			}
		}
	})
}
