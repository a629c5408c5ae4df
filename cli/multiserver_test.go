package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/internal/storetest"
	"tms/state"
	"tms/workers"
)

// TestGroupLabelsAndServersOverTemporal runs tms group label, group ls, status and region ls
// against a real Temporal server, central's worker and a region whose registry holds a
// healthy server and a stale one: labels are set, removed and cleared through the region and
// listed; status and region ls show both servers with their versions, the stale one as such;
// central keeps the list in its catalog.
func TestGroupLabelsAndServersOverTemporal(t *testing.T) {
	srv, c := testTemporal(t)
	ctx := context.Background()
	sc, inv := testState(t, activities.RegionInfo{ID: "lab-1"})
	if err := inv.Enroll(ctx, "52:54:00:00:00:01", "pc1"); err != nil {
		t.Fatal(err)
	}
	if err := inv.CreateGroup(ctx, "room-a"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, s := range []state.Server{
		{ID: "srv-a", Labels: map[string]string{"room": "a"}, Endpoint: "http://127.0.0.1:1", Version: "v-a", BootEnv: "be-1", Started: now, LastSeen: now.Add(time.Hour)},
		{ID: "srv-b", Endpoint: "http://127.0.0.1:2", Version: "v-b", Started: now.Add(-2 * time.Hour), LastSeen: now.Add(-time.Hour)},
	} {
		if err := inv.Heartbeat(ctx, s, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := storetest.Dir(t)
	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}),
		workers.NewRegion(c, &activities.Region{ID: "lab-1", Store: st, Inventory: inv, Version: "v-a", ReportInterval: time.Second,
			ServerStaleAfter: 15 * time.Second}))
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		off := false
		a := &App{Stdout: &out, Stderr: &errb, Progress: &off, Env: func(string) (string, bool) { return "", false }}
		code := a.Run(context.Background(), append([]string{"--temporal", srv.Address()}, args...))
		return code, out.String(), errb.String()
	}

	// Labels: set, list, remove one, refuse bad ones, clear.
	out := must(t, run, "group", "label", "--region", "lab-1", "room-a", "room=a", "rack=1")
	if !strings.Contains(out, "group room-a in region lab-1: labels rack=1,room=a") {
		t.Errorf("group label:\n%s", out)
	}
	rows := decode[[]groupRow](t, must(t, run, "group", "ls", "--region", "lab-1", "--json"))
	if len(rows) != 1 || rows[0].Labels["room"] != "a" || rows[0].Labels["rack"] != "1" {
		t.Errorf("group ls --json: %+v", rows)
	}
	if out := must(t, run, "group", "ls", "--region", "lab-1"); !strings.Contains(out, "LABELS") || !strings.Contains(out, "rack=1,room=a") {
		t.Errorf("group ls:\n%s", out)
	}
	got := decode[groupRow](t, must(t, run, "group", "label", "--region", "lab-1", "room-a", "rack-", "--json"))
	if len(got.Labels) != 1 || got.Labels["room"] != "a" {
		t.Errorf("after rack-: %+v", got)
	}
	fail(t, run, 1, "not a valid label name", "group", "label", "--region", "lab-1", "room-a", "Room!=a")
	fail(t, run, 1, "group nosuch", "group", "label", "--region", "lab-1", "nosuch", "room=a")
	fail(t, run, 2, "neither KEY=VALUE nor KEY-", "group", "label", "--region", "lab-1", "room-a", "room")
	fail(t, run, 2, "at least one KEY=VALUE", "group", "label", "--region", "lab-1", "room-a")
	if got := decode[groupRow](t, must(t, run, "group", "label", "--region", "lab-1", "room-a", "--clear", "--json")); len(got.Labels) != 0 {
		t.Errorf("after --clear: %+v", got)
	}
	must(t, run, "group", "label", "--region", "lab-1", "room-a", "room=a")
	if l, err := inv.TerminalLabels(ctx); err != nil || len(l) != 0 {
		t.Errorf("terminal labels with pc1 in no group: %v, %v", l, err)
	}

	// Status: both servers, srv-b stale.
	var lab regionStatusRow
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, r := range decode[[]regionStatusRow](t, must(t, run, "status", "--json")) {
			if r.Region == "lab-1" {
				lab = r
			}
		}
		if lab.Online && len(lab.Servers) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: lab-1 not online with 2 servers: %+v", lab)
		}
		time.Sleep(300 * time.Millisecond)
	}
	a, b := lab.Servers[0], lab.Servers[1]
	if a.ID != "srv-a" || !a.Healthy || a.State != "healthy" || a.Version != "v-a" || a.BootEnv != "be-1" || a.Labels["room"] != "a" ||
		b.ID != "srv-b" || b.Healthy || b.State != "stale" || b.Version != "v-b" {
		t.Errorf("status servers: %+v", lab.Servers)
	}
	out = must(t, run, "status")
	for _, want := range []string{"SERVER", "srv-a", "healthy", "be-1", "srv-b", "STALE", "v-b"} {
		if !strings.Contains(out, want) {
			t.Errorf("tms status: want %q in\n%s", want, out)
		}
	}
	d := decode[regionDetail](t, must(t, run, "status", "--region", "lab-1", "--json"))
	if len(d.Servers) != 2 || len(d.Groups) != 1 || d.Groups[0].Labels["room"] != "a" {
		t.Errorf("status --region lab-1: servers %+v, groups %+v", d.Servers, d.Groups)
	}

	// Region listing: the servers, and central's catalog keeps them.
	regions := decode[[]regionRow](t, must(t, run, "region", "ls", "--json"))
	if len(regions) != 1 || len(regions[0].Servers) != 2 || regions[0].Servers[1].State != "stale" {
		t.Errorf("region ls --json: %+v", regions)
	}
	if out := must(t, run, "region", "ls"); !strings.Contains(out, "srv-a") || !strings.Contains(out, "STALE") {
		t.Errorf("region ls:\n%s", out)
	}
	kept, err := sc.C.RegionServers(ctx)
	if err != nil || len(kept["lab-1"]) != 2 || kept["lab-1"][0].BootEnv != "be-1" || kept["lab-1"][1].Healthy {
		t.Errorf("central's catalog keeps %+v, %v; want srv-a healthy and srv-b stale", kept, err)
	}
}
