package devenv_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/agent"
	"tms/devenv"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/signing"
	"tms/workflows"
)

// TestStartTerminalHook runs the terminals through Options.StartTerminal, as the network
// namespace lab does with tms-agent processes, here with an agent built only from what the hook
// gets (the terminal's endpoint, key file and central's public key file): every terminal is
// started once at start with an empty disk, and again when a deploy wakes it, and the deploy
// writes the image.
func TestStartTerminalHook(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	calls := map[string]int{}
	hook := func(ctx context.Context, term devenv.Terminal) error {
		mu.Lock()
		calls[term.Name]++
		mu.Unlock()
		u, err := url.Parse(term.Endpoint)
		if err != nil {
			return err
		}
		key, err := agent.ReadKeyFile(term.KeyFile)
		if err != nil {
			return err
		}
		central, err := signing.LoadPublicKey(filepath.Join(dir, "central.pub"))
		if err != nil {
			return err
		}
		a := &agent.Agent{Region: u, MAC: term.MAC, Disk: term.Disk, Key: key, CentralKey: central, Once: true,
			HTTP: &http.Client{Timeout: time.Minute}}
		return a.Run(ctx)
	}
	const size = 16 << 20
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: []string{"region-a"}, Terminals: 2, DiskSize: size, StartTerminal: hook, Database: pgtest.StateFunc(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	if env.CentralKeyFile != filepath.Join(dir, "central.pub") {
		t.Fatalf("CentralKeyFile = %s", env.CentralKeyFile)
	}
	if k, err := signing.LoadPublicKey(env.CentralKeyFile); err != nil || !k.Equal(env.CentralKey) {
		t.Fatalf("%s holds %v, %v; want central's key", env.CentralKeyFile, k, err)
	}
	zero := make([]byte, size)
	for _, term := range env.Terminals {
		if b, err := os.ReadFile(term.Disk); err != nil || !bytes.Equal(b, zero) {
			t.Fatalf("%s's disk is not empty (%d bytes): %v", term.Name, len(b), err)
		}
		if fi, err := os.Stat(term.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s's key file: %v, %v", term.Name, fi, err)
		}
		if k, err := agent.ReadKeyFile(term.KeyFile); err != nil || !bytes.Equal(k, term.Key()) {
			t.Fatalf("%s's key file does not hold its key: %v", term.Name, err)
		}
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	// With nothing to do, each agent's one boot ends: the terminals are off.
	waitFor("the first boots", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls["a-pc1"] == 1 && calls["a-pc2"] == 1 && !env.On("a-pc1") && !env.On("a-pc2")
	})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src := storetest.SampleDisk(t, size, 5)
	imp := storetest.Import(t, env.RegionStore("region-a"), src, "hooked")
	info := activities.VersionInfo{Version: imp.Version.ID.String(), Name: "hooked", DiskSize: imp.DiskSize,
		ChunkSize: imp.Version.Manifest.ChunkSize, StoredBytes: imp.Stats.StoredBytes, Created: imp.Version.Manifest.Meta.Created}
	reg, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.CentralQueue},
		workflows.RegisterVersion, activities.RegisterVersionInput{Info: info, Tag: "latest", Region: "region-a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	res := deploy(t, env, workflows.DeployImageInput{Region: "region-a", Terminals: []string{"a-pc1"}, Image: "hooked"})
	if res.Failed != 0 {
		t.Fatalf("deploy: %+v", res)
	}
	pc1, _ := env.Terminal("a-pc1")
	if storetest.FileSum(t, pc1.Disk) != storetest.FileSum(t, src) {
		t.Fatal("a-pc1's disk is not the image")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["a-pc1"] != 2 || calls["a-pc2"] != 1 {
		t.Fatalf("hook calls %v: want a-pc1 woken once by the deploy, a-pc2 left off", calls)
	}
}
