package cli

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/agent"
	"tms/agentapi"
	"tms/agentwire"
	"tms/bootsvc"
	"tms/internal/temporaltest"
	"tms/state"
	"tms/workers"
	"tms/workflows"
)

// simLab is a classroom of terminals running the installed OS's agent service against a real
// region agent API: a poweroff stops a terminal's service, a reboot restarts it, and a magic
// packet sent to the lab's loopback UDP port starts the service of a terminal that is off.
type simLab struct {
	t       *testing.T
	region  *url.URL
	keys    map[string][]byte
	mu      sync.Mutex
	running map[string]bool
	ctx     context.Context
	wg      sync.WaitGroup
}

func (l *simLab) start(mac string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[mac] || l.ctx.Err() != nil {
		return
	}
	l.running[mac] = true
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		s := &agent.Service{Region: l.region, MAC: mac, Key: l.keys[mac], Power: simSwitch{l, mac}, Wait: 5 * time.Second, Backoff: 50 * time.Millisecond}
		if err := s.Run(l.ctx); err != nil {
			l.t.Errorf("terminal %s: %v", mac, err)
		}
	}()
}

func (l *simLab) isOn(mac string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running[mac]
}

type simSwitch struct {
	l   *simLab
	mac string
}

func (s simSwitch) Poweroff(context.Context) error {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	s.l.running[s.mac] = false
	return nil
}

func (s simSwitch) Reboot(ctx context.Context) error {
	s.Poweroff(ctx)
	time.AfterFunc(100*time.Millisecond, func() { s.l.start(s.mac) })
	return nil
}

var labMACs = []string{"52:54:00:00:0b:01", "52:54:00:00:0b:02", "52:54:00:00:0b:03"}

const (
	farMAC    = "52:54:00:00:0b:04" // last seen on another segment
	silentMAC = "52:54:00:00:0b:05" // enrolled, seen once, no agent ever polls
)

// powerSetup starts Temporal, central's worker (which knows region-b) and region-b's worker
// over a real agent API with the lab's three terminals up, and pc4 and pc5 not in the lab.
func powerSetup(t *testing.T) (tmsRun, *simLab, client.Client, *state.Inventory) {
	t.Helper()
	srv, c := testTemporal(t)
	ctx := context.Background()
	sc, inv := testState(t, activities.RegionInfo{ID: "region-b"})

	api := &agentapi.Server{Inventory: inv}
	mux := http.NewServeMux()
	api.Routes(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	u, _ := url.Parse(hs.URL)

	lctx, cancel := context.WithCancel(ctx)
	lab := &simLab{t: t, region: u, keys: map[string][]byte{}, running: map[string]bool{}, ctx: lctx}
	t.Cleanup(func() { cancel(); lab.wg.Wait() })
	if err := inv.CreateGroup(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	var err error
	for i, mac := range append(append([]string{}, labMACs...), farMAC, silentMAC) {
		if err := inv.Enroll(ctx, mac, "pc"+string(rune('1'+i))); err != nil {
			t.Fatal(err)
		}
		if lab.keys[mac], err = inv.IssueAgentKey(ctx, mac); err != nil {
			t.Fatal(err)
		}
	}
	if err := inv.AddToGroup(ctx, "lab", labMACs...); err != nil {
		t.Fatal(err)
	}
	if err := inv.Seen(ctx, farMAC, "192.168.9.9", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := inv.Seen(ctx, silentMAC, "127.0.0.1", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}

	// The lab's wake port: magic packets for the lab's terminals start them.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go bootsvc.ServeMagic(lctx, pc, func(mac string) {
		for _, m := range labMACs {
			if m == mac {
				lab.start(mac)
			}
		}
	})
	waker := &bootsvc.Waker{Target: netip.MustParseAddrPort(pc.LocalAddr().String())}

	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}),
		workers.NewRegion(c, &activities.Region{ID: "region-b", Inventory: inv, Agents: api, Mailbox: api, Waker: waker,
			Segment: netip.MustParsePrefix("127.0.0.0/8"), WakeTimeout: 3 * time.Second}))
	for _, mac := range labMACs {
		lab.start(mac)
	}
	eventually(t, "the lab's agents to poll", func() bool {
		for _, mac := range labMACs {
			if !api.Connected(mac) {
				return false
			}
		}
		return true
	})
	return runnerAt(srv.Address()), lab, c, inv
}

// powerResult is what `tms power ... --wait --json` prints.
type powerResult struct {
	Task   string
	Error  string
	Result workflows.PowerTerminalsResult
}

func wantOutcomes(t *testing.T, res powerResult, want string) {
	t.Helper()
	var got []string
	for _, o := range res.Result.Terminals {
		got = append(got, o.Name+"="+o.Outcome)
	}
	if strings.Join(got, " ") != want {
		t.Fatalf("outcomes %q, want %q (%+v)", strings.Join(got, " "), want, res)
	}
}

func TestPowerCommandsOverTemporal(t *testing.T) {
	run, lab, c, inv := powerSetup(t)
	save := func(id, name string) { temporaltest.SaveHistory(t, c, id, "", name) }

	// Off: every terminal's agent takes the poweroff and stops polling.
	res := decode[powerResult](t, must(t, run, "power", "off", "--region", "region-b", "--group", "lab", "--wait", "--json"))
	if res.Task != "power-off/region-b/lab"+testStamp || res.Result.Action != "off" || res.Result.Failed != 0 {
		t.Fatalf("power off: %+v", res)
	}
	wantOutcomes(t, res, "pc1=off pc2=off pc3=off")
	for _, mac := range labMACs {
		if lab.isOn(mac) {
			t.Errorf("%s is still on", mac)
		}
	}
	save(res.Task, "PowerTerminals-off")

	// On: woken by the magic packet, and polling again.
	out := must(t, run, "power", "on", "--region", "region-b", "--group", "lab", "--wait")
	if !strings.Contains(out, "power on: 3 of 3 terminals done; pc1 woke; pc2 woke; pc3 woke") {
		t.Fatalf("power on: %s", out)
	}
	for _, mac := range labMACs {
		if !lab.isOn(mac) {
			t.Errorf("%s did not wake", mac)
		}
	}
	save("power-on/region-b/lab"+testStamp, "PowerTerminals-on")

	// A terminal that is up is left alone.
	res = decode[powerResult](t, must(t, run, "power", "on", "--region", "region-b", "--terminal", "pc1", "--wait", "--json"))
	wantOutcomes(t, res, "pc1=already on")

	// Reboot, by names and MAC.
	res = decode[powerResult](t, must(t, run, "power", "reboot", "--region", "region-b", "--terminal", "pc1,"+labMACs[1], "--wait", "--json"))
	wantOutcomes(t, res, "pc1=rebooted pc2=rebooted")
	eventually(t, "the rebooted terminals to come back", func() bool { return lab.isOn(labMACs[0]) && lab.isOn(labMACs[1]) })
	save(res.Task, "PowerTerminals-reboot")

	// One terminal that does not answer fails only itself; alone, it fails the task.
	code, stdout, errs := run("power", "off", "--region", "region-b", "--terminal", "pc3", "--terminal", "pc5", "--wait", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	res = decode[powerResult](t, stdout)
	wantOutcomes(t, res, "pc3=off pc5=did not answer")
	if !strings.Contains(res.Result.Terminals[1].Reason, "no agent has polled this region") {
		t.Errorf("reason: %q", res.Result.Terminals[1].Reason)
	}
	fail(t, run, 1, "pc5: did not answer: no agent has polled", "power", "reboot", "--region", "region-b", "--terminal", "pc5", "--wait")
	code, stdout, _ = run("power", "on", "--region", "region-b", "--terminal", "pc5", "--wait", "--json")
	res = decode[powerResult](t, stdout)
	if code != 1 || !strings.Contains(res.Error, "failed on every terminal") {
		t.Fatalf("power on of a terminal that does not come: exit %d, %+v", code, res)
	}
	wantOutcomes(t, res, "pc5=did not answer")
	if r := res.Result.Terminals[0].Reason; !strings.Contains(r, "Wake-on-LAN packets") || !strings.Contains(r, "at 127.0.0.1") {
		t.Errorf("reason: %q", r)
	}
	save(res.Task, "PowerTerminals-silent")

	// A terminal last seen on another segment is refused, not woken.
	fail(t, run, 1, "pc4: refused: last seen at 192.168.9.9, which is not on the region's boot segment 127.0.0.0/8",
		"power", "on", "--region", "region-b", "--terminal", "pc4", "--wait")

	// A reboot in the middle of someone's deploy is refused, naming the deploy.
	if _, err := inv.StartTask(context.Background(), state.Task{ID: "deploy/region-b/lab/win11@r1", MAC: labMACs[0], Kind: agentwire.KindDeploy, Version: "v"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// As PrepareTask leaves it: the terminal's boot set to the task.
	if err := inv.SetBootAction(context.Background(), labMACs[0], state.BootAction{Action: agentwire.ActionDeploy, Task: "deploy/region-b/lab/win11@r1",
		Version: "v", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	fail(t, run, 1, "pc1: refused: task deploy/region-b/lab/win11@r1 (deploy) is running on it", "power", "reboot", "--region", "region-b", "--terminal", "pc1", "--wait")
	if !lab.isOn(labMACs[0]) {
		t.Error("pc1 was rebooted during its deploy")
	}

	// Without --wait the task starts and says how to follow it; --json says it as JSON.
	out = must(t, run, "power", "on", "--region", "region-b", "--group", "lab")
	if !strings.Contains(out, "started power on of group lab in region region-b: task power-on/region-b/lab"+testStamp) {
		t.Fatalf("power on: %s", out)
	}
	eventually(t, "the power on to end", func() bool {
		d := decode[taskDetail](t, must(t, run, "task", "show", "power-on/region-b/lab"+testStamp, "--json"))
		return d.Status == "Completed"
	})
	res = decode[powerResult](t, must(t, run, "power", "off", "--region", "region-b", "--terminal", "pc2", "--json"))
	if res.Task != "power-off/region-b/pc2"+testStamp {
		t.Fatalf("power off --json: %+v", res)
	}

	// Bad input.
	fail(t, run, 2, "--region is required", "power", "on", "--group", "lab")
	fail(t, run, 2, "--group or --terminal is required", "power", "off", "--region", "region-b")
	fail(t, run, 2, "not both", "power", "reboot", "--region", "region-b", "--group", "lab", "--terminal", "pc1")
	fail(t, run, 2, "takes no arguments", "power", "on", "--region", "region-b", "--group", "lab", "extra")
	fail(t, run, 1, "unknown region nowhere", "power", "on", "--region", "nowhere", "--group", "lab")
	fail(t, run, 1, "region region-b has no group attic", "power", "on", "--region", "region-b", "--group", "attic", "--wait")
	fail(t, run, 1, "region region-b has no terminal pc9", "power", "off", "--region", "region-b", "--terminal", "pc9", "--wait")

	// Enrollment tokens: printed once, stored as a hash, traded by terminals for their key.
	code, stdout, errs = run("terminal", "enroll-token", "--region", "region-b", "--group", "lab", "--ttl", "30m", "--rekey")
	token := strings.TrimSpace(stdout)
	if code != 0 || !strings.HasPrefix(token, "tms-enroll-") || !strings.Contains(errs, "group lab in region region-b") || !strings.Contains(errs, "for 30m") {
		t.Fatalf("enroll-token: exit %d\n%s\n%s", code, stdout, errs)
	}
	if key, err := inv.RedeemEnrollToken(context.Background(), token, labMACs[2], time.Now()); err != nil || len(key) != state.AgentKeySize {
		t.Fatalf("trading the token: %v", err)
	}
	if _, err := inv.RedeemEnrollToken(context.Background(), token, silentMAC, time.Now()); err == nil || !strings.Contains(err.Error(), "not in group lab") {
		t.Fatalf("a terminal outside the token's group: %v", err)
	}
	fail(t, run, 2, "--ttl must be between", "terminal", "enroll-token", "--region", "region-b", "--ttl", "0s")
	fail(t, run, 2, "--ttl must be between", "terminal", "enroll-token", "--region", "region-b", "--ttl", "200h")
	fail(t, run, 1, "region region-b has no group attic", "terminal", "enroll-token", "--region", "region-b", "--group", "attic")
}
