package bootsvc

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
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

// bootEnvFixture is a script fixture whose server serves published bootenv versions: two
// signed by central (current and canary) and one signed by another key.
type bootEnvFixture struct {
	*fixture
	current, canary, forged string
}

func newBootEnvFixture(t *testing.T) *bootEnvFixture {
	t.Helper()
	ctx := context.Background()
	f := &bootEnvFixture{fixture: newFixture(t)}
	b, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(b, store.Options{})
	if err := st.Init(ctx); err != nil {
		t.Fatal(err)
	}
	central, _ := signing.GenerateKey()
	other, _ := signing.GenerateKey()
	publish := func(kernel string, key *signing.PrivateKey) string {
		src := t.TempDir()
		if err := bootenv.WriteSample(src, kernel); err != nil {
			t.Fatal(err)
		}
		res, err := bootenv.Publish(ctx, st, src, bootenv.PublishOptions{Name: "lab"})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutSignature(ctx, res.Version.ID, key.SignVersion(res.Version.ID)); err != nil {
			t.Fatal(err)
		}
		return res.Version.ID.String()
	}
	f.current, f.canary, f.forged = publish("6.1.0-1", central), publish("6.12.0-2", central), publish("6.12.0-3", other)
	f.sc.BootEnvs = &bootenv.Versions{Store: st, Dir: t.TempDir(), CentralKey: central.Public()}
	return f
}

func (f *bootEnvFixture) setCurrent(t *testing.T, version string) {
	t.Helper()
	if err := f.inv.SetSetting(context.Background(), state.Setting{Key: state.SettingBootEnv, Value: version, SetAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func (f *bootEnvFixture) probe(t *testing.T, mac, name, id, version string) {
	t.Helper()
	ctx := context.Background()
	if err := f.inv.Enroll(ctx, mac, name); err != nil {
		t.Fatal(err)
	}
	if _, err := f.inv.StartTask(ctx, state.Task{ID: id, MAC: mac, Kind: agentwire.KindProbe, Version: version}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.inv.SetBootAction(ctx, mac, state.BootAction{Action: agentwire.ActionProbe, Task: id, Version: version, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func (f *bootEnvFixture) fetch(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestScriptPointsEachTerminalAtItsBootEnv(t *testing.T) {
	f := newBootEnvFixture(t)
	const deployMAC, canaryMAC = "52:54:00:aa:00:11", "52:54:00:aa:00:12"
	f.task(t, deployMAC, "pc11", "deploy/r/lab/img/pc11", agentwire.KindDeploy)
	f.probe(t, canaryMAC, "pc12", "bootenv-rollout/x/r", f.canary)

	// No current version: the plain boot directory, as before versions existed.
	plain := f.get(t, f.sc.ScriptURL(hw(deployMAC)))
	if !strings.Contains(plain, "kernel http://10.0.5.2:8301/boot/vmlinuz ") || strings.Contains(plain, "tms.bootenv") {
		t.Fatalf("without a current version:\n%s", plain)
	}

	// The region's current version for the terminal without an override, the canary's own for
	// the canary.
	f.setCurrent(t, f.current)
	cur := f.get(t, f.sc.ScriptURL(hw(deployMAC)))
	if !strings.Contains(cur, "kernel http://10.0.5.2:8301/boot/"+f.current+"/vmlinuz ") || !strings.Contains(cur, "tms.bootenv="+f.current) ||
		!strings.Contains(cur, "initrd --name initrd http://10.0.5.2:8301/boot/"+f.current+"/initrd") {
		t.Fatalf("with a current version:\n%s", cur)
	}
	probe := f.get(t, f.sc.ScriptURL(hw(canaryMAC)))
	golden(t, "probe.ipxe", strings.ReplaceAll(probe, f.canary, "VERSION"))
	if !strings.Contains(probe, "tms.bootenv="+f.canary) {
		t.Fatalf("the canary's script:\n%s", probe)
	}

	// The files the scripts name are served, and are the published ones.
	for _, v := range []string{f.current, f.canary} {
		code, k := f.fetch(t, "/boot/"+v+"/vmlinuz")
		if kv, err := bootenv.KernelVersion(k); code != http.StatusOK || err != nil || (v == f.current) != (kv == "6.1.0-1") {
			t.Fatalf("kernel of %s: %d, %q, %v", v, code, kv, err)
		}
		code, i := f.fetch(t, "/boot/"+v+"/initrd")
		if code != http.StatusOK || bootenv.CheckInitrd(i) != nil {
			t.Fatalf("initrd of %s: %d", v, code)
		}
	}
	for _, p := range []string{"/boot/" + f.current + "/bootenv.json", "/boot/" + f.current[:12] + "/vmlinuz", "/boot/..%2F" + f.current + "/vmlinuz",
		"/boot/" + strings.Repeat("0", 64) + "/vmlinuz"} {
		if code, _ := f.fetch(t, p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
}

func TestAVersionCentralDidNotSignIsNeverServed(t *testing.T) {
	f := newBootEnvFixture(t)
	const mac = "52:54:00:aa:00:13"
	f.task(t, mac, "pc13", "deploy/r/lab/img/pc13", agentwire.KindDeploy)
	f.setCurrent(t, f.forged)
	script := f.get(t, f.sc.ScriptURL(hw(mac)))
	if strings.Contains(script, "kernel ") || !strings.Contains(script, "cannot serve the in-memory OS") {
		t.Fatalf("a script for a forged current version:\n%s", script)
	}
	code, b := f.fetch(t, "/boot/"+f.forged+"/vmlinuz")
	if code != http.StatusNotFound || bytes.Contains(b, []byte("HdrS")) {
		t.Fatalf("GET a forged version's kernel: %d", code)
	}
	if entries, _ := os.ReadDir(f.sc.BootEnvs.(*bootenv.Versions).Dir); len(entries) != 0 {
		t.Fatalf("the forged version was written: %v", entries)
	}
	_ = filepath.Join
}
