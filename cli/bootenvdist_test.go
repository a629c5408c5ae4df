package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/devenv"
)

// TestBootEnvCommands is the acceptance of the in-memory OS's versions in tms dev's environment
// (simulated terminals that network boot): publish a sample bootenv, roll it out to region-a then
// region-b behind a canary each, see it in ls and status; a broken one stops at region-a's canary
// and both regions keep the first.
func TestBootEnvCommands(t *testing.T) {
	dir := t.TempDir()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: []string{"region-a", "region-b"}, Terminals: 2, DiskSize: 16 << 20, NetBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	run := newRunner(nil)
	tms := func(args ...string) string {
		t.Helper()
		return must(t, run, append([]string{"--temporal", env.TemporalAddress()}, args...)...)
	}
	store := filepath.Join(dir, "region-a", "store")
	good, broken := filepath.Join(dir, "good"), filepath.Join(dir, "broken")
	tms("bootenv", "sample", "--out", good, "--kernel-version", "6.12.0-7-amd64")
	tms("bootenv", "sample", "--out", broken, "--broken", "initrd")

	fail(t, run, 1, "would not boot", "--temporal", env.TemporalAddress(), "bootenv", "publish", broken, "--region", "region-a", "--store", store)
	pub := decode[bootEnvRow](t, tms("bootenv", "publish", good, "--region", "region-a", "--store", store, "--name", "lab", "--json"))
	if pub.Name != "lab" || pub.Kernel != "6.12.0-7-amd64" || len(pub.Version) != 64 {
		t.Fatalf("publish: %+v", pub)
	}
	ls := decode[[]bootEnvRow](t, tms("bootenv", "ls", "--json"))
	if len(ls) != 1 || ls[0].Version != pub.Version || strings.Join(ls[0].Regions, ",") != "region-a" || len(ls[0].Running) != 0 {
		t.Fatalf("ls after publish: %+v", ls)
	}

	out := tms("bootenv", "rollout", pub.Version[:8], "--regions", "region-a,region-b", "--canary", "region-b=b-pc2", "--canary-timeout", "1m", "--wait")
	if !strings.Contains(out, "is the in-memory OS of region-a done (canary a-pc") || !strings.Contains(out, "region-b done (canary b-pc2)") {
		t.Fatalf("rollout output: %s", out)
	}
	ls = decode[[]bootEnvRow](t, tms("bootenv", "ls", "--json"))
	if strings.Join(ls[0].Running, ",") != "region-a,region-b" || strings.Join(ls[0].Regions, ",") != "region-a,region-b" {
		t.Fatalf("ls after the rollout: %+v", ls)
	}
	// Regions report every 15 s: status shows the new version by the next report, for each
	// region and for each region's server (which serves it).
	for deadline := time.Now().Add(time.Minute); ; {
		status := tms("status")
		if strings.Contains(status, "BOOTENV") && strings.Count(status, pub.Version[:12]) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status a minute after the rollout:\n%s", status)
		}
		time.Sleep(time.Second)
	}

	bad := decode[bootEnvRow](t, tms("bootenv", "publish", broken, "--region", "region-a", "--store", store, "--name", "lab", "--force", "--json"))
	fail(t, run, 1, "region region-a: canary a-pc1 did not come back from bootenv "+bad.Version[:12],
		"--temporal", env.TemporalAddress(), "bootenv", "rollout", bad.Version, "--regions", "region-a,region-b", "--canary", "a-pc1", "--canary-timeout", "15s", "--wait")
	rows := decode[[]regionStatusRow](t, tms("status", "--json"))
	for _, r := range rows {
		if r.BootEnv != pub.Version {
			t.Errorf("%s runs %q after the broken rollout, want %s", r.Region, r.BootEnv, pub.Version)
		}
	}
}
