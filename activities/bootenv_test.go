package activities

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/agentwire"
	"tms/bootenv"
	"tms/signing"
	"tms/state"
	"tms/store"
)

func bootEnvRegion(t *testing.T) (*Region, *signing.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	inv, err := state.OpenInventory(ctx, filepath.Join(t.TempDir(), "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	b, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(b, store.Options{})
	if err := st.Init(ctx); err != nil {
		t.Fatal(err)
	}
	key, _ := signing.GenerateKey()
	r := &Region{ID: "region-a", Inventory: inv, Store: st, CentralKey: key.Public(),
		BootEnvs: &bootenv.Versions{Store: st, Dir: t.TempDir(), CentralKey: key.Public()}}
	return r, key
}

func TestPickCanary(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, inv *state.Inventory)
		in    CanaryInput
		want  string // the canary's name, or the error's text
		err   bool
	}{
		{name: "no terminal", want: "region region-a has no enrolled terminal", err: true},
		{name: "only terminals not enrolled", setup: func(t *testing.T, inv *state.Inventory) {
			inv.Seen(ctx, "52:54:00:00:00:09", "10.0.0.9", base)
		}, want: "no enrolled terminal", err: true},
		{name: "the one seen most recently", setup: func(t *testing.T, inv *state.Inventory) {
			enroll(t, inv, "52:54:00:00:00:01", "pc1", base)
			enroll(t, inv, "52:54:00:00:00:02", "pc2", base.Add(time.Minute))
			enroll(t, inv, "52:54:00:00:00:03", "pc3", base.Add(-time.Minute))
		}, want: "pc2"},
		{name: "a busy terminal is passed over", setup: func(t *testing.T, inv *state.Inventory) {
			enroll(t, inv, "52:54:00:00:00:01", "pc1", base)
			enroll(t, inv, "52:54:00:00:00:02", "pc2", base.Add(time.Minute))
			busy(t, inv, "52:54:00:00:00:02")
		}, want: "pc1"},
		{name: "all busy", setup: func(t *testing.T, inv *state.Inventory) {
			enroll(t, inv, "52:54:00:00:00:01", "pc1", base)
			busy(t, inv, "52:54:00:00:00:01")
		}, want: "every enrolled terminal of region region-a (1) has a task under way", err: true},
		{name: "the one named", setup: func(t *testing.T, inv *state.Inventory) {
			enroll(t, inv, "52:54:00:00:00:01", "pc1", base)
			enroll(t, inv, "52:54:00:00:00:02", "pc2", base.Add(time.Minute))
		}, in: CanaryInput{Terminal: "pc1"}, want: "pc1"},
		{name: "the one named is busy", setup: func(t *testing.T, inv *state.Inventory) {
			enroll(t, inv, "52:54:00:00:00:01", "pc1", base)
			busy(t, inv, "52:54:00:00:00:01")
		}, in: CanaryInput{Terminal: "pc1"}, want: "is busy with task", err: true},
		{name: "the one named is unknown", in: CanaryInput{Terminal: "pc7"}, want: "canary: region region-a has no terminal pc7", err: true},
		{name: "the first candidate the region has", setup: func(t *testing.T, inv *state.Inventory) {
			enroll(t, inv, "52:54:00:00:00:01", "pc1", base)
			enroll(t, inv, "52:54:00:00:00:02", "pc2", base.Add(time.Minute))
		}, in: CanaryInput{Candidates: []string{"b-pc1", "pc1"}}, want: "pc1"},
		{name: "no candidate here: the region picks", setup: func(t *testing.T, inv *state.Inventory) {
			enroll(t, inv, "52:54:00:00:00:02", "pc2", base)
		}, in: CanaryInput{Candidates: []string{"b-pc1"}}, want: "pc2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := bootEnvRegion(t)
			r.Now = func() time.Time { return base.Add(time.Hour) }
			if tc.setup != nil {
				tc.setup(t, r.Inventory)
			}
			got, err := r.PickCanary(ctx, tc.in)
			if tc.err {
				if !ErrNoCanary.Matches(err) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want NoCanary saying %q", err, tc.want)
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("canary %+v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func enroll(t *testing.T, inv *state.Inventory, mac, name string, seen time.Time) {
	t.Helper()
	ctx := context.Background()
	if err := inv.Seen(ctx, mac, "10.0.0.1", seen); err != nil {
		t.Fatal(err)
	}
	if err := inv.Enroll(ctx, mac, name); err != nil {
		t.Fatal(err)
	}
}

func busy(t *testing.T, inv *state.Inventory, mac string) {
	t.Helper()
	ctx := context.Background()
	if _, err := inv.StartTask(ctx, state.Task{ID: "deploy/x/" + mac, MAC: mac, Kind: agentwire.KindDeploy, Version: "v"}, time.Date(2026, 12, 3, 8, 30, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if err := inv.SetBootAction(ctx, mac, state.BootAction{Action: agentwire.ActionDeploy, Task: "deploy/x/" + mac, Version: "v",
		Expires: time.Date(2026, 12, 3, 20, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
}

func TestSetBootEnvServesOnlyWhatCentralSigned(t *testing.T) {
	ctx := context.Background()
	r, key := bootEnvRegion(t)
	src := t.TempDir()
	if err := bootenv.WriteSample(src, "6.12.0-1"); err != nil {
		t.Fatal(err)
	}
	res, err := bootenv.Publish(ctx, r.Store, src, bootenv.PublishOptions{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	v := res.Version.ID.String()
	err = r.SetBootEnv(ctx, SetBootEnvInput{Version: v, By: "ana"})
	if !ErrBadSignature.Matches(err) || !strings.Contains(err.Error(), "never served") {
		t.Fatalf("an unsigned version: %v", err)
	}
	if cur, err := r.CurrentBootEnv(ctx); err != nil || cur.Version != "" {
		t.Fatalf("current after a refusal: %+v %v", cur, err)
	}
	if err := r.Store.PutSignature(ctx, res.Version.ID, key.SignVersion(res.Version.ID)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBootEnv(ctx, SetBootEnvInput{Version: v, By: "ana", Task: "bootenv-rollout/x"}); err != nil {
		t.Fatal(err)
	}
	if cur, err := r.CurrentBootEnv(ctx); err != nil || cur.Version != v || cur.SetBy != "ana" {
		t.Fatalf("current: %+v %v", cur, err)
	}
	if h, err := r.Store.GetPin(ctx, res.Version.ID); err != nil || h.By != bootEnvPinner {
		t.Fatalf("the current bootenv is not pinned: %+v %v", h, err)
	}
	// A second version: it is pinned, the first's rollout pin goes.
	if err := bootenv.WriteSample(src, "6.12.0-2"); err != nil {
		t.Fatal(err)
	}
	res2, err := bootenv.Publish(ctx, r.Store, src, bootenv.PublishOptions{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store.PutSignature(ctx, res2.Version.ID, key.SignVersion(res2.Version.ID)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetBootEnv(ctx, SetBootEnvInput{Version: res2.Version.ID.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Store.GetPin(ctx, res.Version.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the previous bootenv's pin: %v", err)
	}
	if _, err := r.Store.GetPin(ctx, res2.Version.ID); err != nil {
		t.Fatalf("the new bootenv's pin: %v", err)
	}
	if err := r.SetBootEnv(ctx, SetBootEnvInput{Version: strings.Repeat("ab", 32)}); !ErrNotHere.Matches(err) {
		t.Fatalf("a version not in the store: %v", err)
	}
	// A probe task takes the version and materializes it; a disk image's version is no bootenv.
	enroll(t, r.Inventory, "52:54:00:00:00:01", "pc1", time.Now())
	ref, err := r.PrepareTask(ctx, TaskInput{Task: "bootenv-rollout/x@1", TerminalRef: "pc1", Kind: agentwire.KindProbe, Version: v, Expires: time.Now().Add(time.Hour)})
	if err != nil || ref.Name != "pc1" {
		t.Fatalf("probe task: %+v %v", ref, err)
	}
	if a, err := r.Inventory.BootAction(ctx, ref.MAC, time.Now()); err != nil || a.Action != agentwire.ActionProbe || a.Version != v {
		t.Fatalf("the canary's boot action: %+v %v", a, err)
	}
}

func TestCentralBootEnvCatalog(t *testing.T) {
	ctx := context.Background()
	cat, err := state.OpenCatalog(ctx, filepath.Join(t.TempDir(), "central.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	key, _ := signing.GenerateKey()
	c := &Central{Catalog: StateCatalog{C: cat}, Key: key}
	for _, r := range []string{"region-a", "region-b"} {
		if err := c.RegisterRegion(ctx, RegionInfo{ID: r}); err != nil {
			t.Fatal(err)
		}
	}
	v := "91bc0000000000000000000000000000000000000000000000000000000000aa"
	info := VersionInfo{Version: v, Name: "bootenv.lab", Created: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC), DiskSize: 1 << 20, ChunkSize: 1 << 20}
	if _, err := c.RegisterBootEnv(ctx, RegisterBootEnvInput{Info: VersionInfo{Version: v, Name: "lab", Created: info.Created}, Region: "region-a"}); !ErrBadImage.Matches(err) {
		t.Fatalf("a disk image registered as a bootenv: %v", err)
	}
	sig, err := c.RegisterBootEnv(ctx, RegisterBootEnvInput{Info: info, Region: "region-a", KernelVersion: "6.12.0-1", AgentVersion: "v2", By: "ana"})
	if err != nil || sig.Signature.KeyID != key.Public().ID() {
		t.Fatalf("central's signature %+v, %v", sig, err)
	}
	if err := c.RecordRegionBootEnv(ctx, RegionBootEnvInput{Region: "region-b", Version: v, By: "rollout", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListBootEnvs(ctx)
	if err != nil || len(list.BootEnvs) != 1 {
		t.Fatalf("%+v %v", list, err)
	}
	b := list.BootEnvs[0]
	if b.Name != "lab" || b.KernelVersion != "6.12.0-1" || b.AgentVersion != "v2" || b.PublishedBy != "ana" || strings.Join(b.Regions, ",") != "region-a" || strings.Join(b.Running, ",") != "region-b" {
		t.Fatalf("bootenv %+v", b)
	}
	for _, tc := range []struct {
		v    string
		want ErrorType
	}{{"91bc00", ""}, {"91bc", ErrBadVersion}, {"abcdef", ErrUnknownImage}, {"91BC00", ErrBadVersion}} {
		got, err := c.ResolveBootEnv(ctx, BootEnvInput{Version: tc.v})
		if tc.want == "" && (err != nil || got.Version != v) || tc.want != "" && !tc.want.Matches(err) {
			t.Errorf("resolve %s: %+v %v, want %s", tc.v, got, err, tc.want)
		}
	}
}
