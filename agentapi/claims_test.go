package agentapi_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tms/agent"
	"tms/agentwire"
	"tms/internal/logbuf"
	"tms/internal/storetest"
	"tms/state"
	"tms/store"
)

// from is an HTTP client whose connections leave from ip (any 127.0.0.0/8 address is loopback),
// so one test plays several machines of a classroom.
func from(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// The boot service claims a terminal's boot for the address its iPXE asked from.
func (r *region) claim(t *testing.T, mac, ip string) string {
	t.Helper()
	a, token, err := r.api.ClaimNetworkBoot(context.Background(), mac, ip)
	if err != nil || token == "" || a.Task == "" {
		t.Fatalf("claim of %s from %s: %+v %q %v", mac, ip, a, token, err)
	}
	return token
}

// Finding: a forged boot request set a terminal's disk size to 1 byte, and a region without
// the boot service handed a task token to any boot request naming a MAC.
func TestUnprovenBootGetsNothingAndChangesNothing(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	r.task(t, "52:54:00:00:01:01", "pc1", "capture/1/run", "capture", "lab")
	if err := r.inv.SetDisk(ctx, "52:54:00:00:01:01", "/dev/sda", 64<<30); err != nil {
		t.Fatal(err)
	}
	c := &agent.Client{Region: r.url, HTTP: from("127.0.0.9")}
	for _, req := range []agentwire.BootRequest{
		{MAC: "52:54:00:00:01:01", Disk: "/dev/sda", DiskSize: 1},
		{MAC: "52:54:00:00:01:01", Disk: "/dev/sda", DiskSize: 1, BootToken: "guess"},
	} {
		rep, err := c.Boot(ctx, req)
		if err != nil || rep.Action != "local" || rep.Token != "" {
			t.Fatalf("unproven boot %+v: %+v, %v", req, rep, err)
		}
	}
	if term, _ := r.inv.Terminal(ctx, "52:54:00:00:01:01"); term.DiskSize != 64<<30 {
		t.Fatalf("an unproven boot request changed the disk size to %d", term.DiskSize)
	}
	if task, _ := r.inv.Task(ctx, "capture/1/run"); task.State != state.TaskWaiting {
		t.Fatalf("task after unproven boots: %+v", task)
	}
	// A key that is not the terminal's is refused outright.
	forged := &agent.Client{Region: r.url, MAC: "52:54:00:00:01:01", Key: make([]byte, state.AgentKeySize)}
	if _, err := forged.Boot(ctx, agentwire.BootRequest{MAC: "52:54:00:00:01:01", DiskSize: 1}); status(err) != http.StatusUnauthorized {
		t.Fatalf("boot signed with a wrong key: %v", err)
	}
}

// Finding: a DISCOVER with the victim's MAC got the script's secret, and one GET of the script
// the task token: the attacker's disk became the image. Now the second machine to claim the boot
// fails the task, naming both addresses, and nothing is kept from either.
func TestTwoClaimantsFailTheTask(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	const mac = "52:54:00:00:01:02"
	r.task(t, mac, "pc2", "capture/2/run", "capture", "lab")
	r.claim(t, mac, "127.0.0.2") // the terminal's iPXE
	_, _, err := r.api.ClaimNetworkBoot(ctx, mac, "127.0.0.66")
	var re *state.RivalError
	if !errors.As(err, &re) || re.First != "127.0.0.2" || re.Second != "127.0.0.66" || !strings.Contains(err.Error(), "127.0.0.2 and 127.0.0.66") {
		t.Fatalf("second claim: %v", err)
	}
	task, _ := r.inv.Task(ctx, "capture/2/run")
	if task.State != state.TaskFailed || !strings.Contains(task.Error, "127.0.0.2 and 127.0.0.66") || !strings.Contains(task.Error, "nothing this task did was published") {
		t.Fatalf("task after two claims: %+v", task)
	}
	if len(r.wait.completed) != 1 || r.wait.completed[0].State != state.TaskFailed {
		t.Fatalf("the waiting activity was not told: %+v", r.wait.completed)
	}
}

// The token works only from the address that claimed the boot; from anywhere else it fails
// the task, and a capture started from the right address is then refused.
func TestTokenFromAnotherAddressFailsTheTask(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	const mac = "52:54:00:00:01:03"
	storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 3), "lab")
	r.task(t, mac, "pc3", "capture/3/run", "capture", "lab")
	boot := r.claim(t, mac, "127.0.0.3")
	term := &agent.Client{Region: r.url, MAC: mac, HTTP: from("127.0.0.3")}
	rep, err := term.Boot(ctx, agentwire.BootRequest{MAC: mac, Disk: "disk", DiskSize: 4 << 20, BootToken: boot})
	if err != nil || rep.Action != "capture" || rep.Token == "" || rep.Token == boot {
		t.Fatalf("boot with the script's token: %+v, %v (the token must be exchanged)", rep, err)
	}
	term.Token = rep.Token
	if _, err := term.Task(ctx); err != nil {
		t.Fatal(err)
	}
	thief := &agent.Client{Region: r.url, MAC: mac, Token: rep.Token, HTTP: from("127.0.0.77")}
	if _, err := thief.Task(ctx); status(err) != http.StatusConflict || !strings.Contains(err.Error(), "127.0.0.3 and 127.0.0.77") {
		t.Fatalf("token from another address: %v", err)
	}
	if _, err := term.Publish(ctx, []byte(`{}`)); status(err) != http.StatusForbidden && status(err) != http.StatusConflict {
		t.Fatalf("publish after the task failed: %v", err)
	}
	if task, _ := r.inv.Task(ctx, "capture/3/run"); task.State != state.TaskFailed {
		t.Fatalf("task: %+v", task)
	}
	// The script's token, once exchanged, is spent: presented again it opens nothing (a
	// refusal that says so, the task goes on), and from another address it is a rival.
	r.task2(t, mac, "capture/3/run2", "capture", "lab")
	boot = r.claim(t, mac, "127.0.0.3")
	if _, err := term.Boot(ctx, agentwire.BootRequest{MAC: mac, DiskSize: 4 << 20, BootToken: boot}); err != nil {
		t.Fatal(err)
	}
	if rep, err := term.Boot(ctx, agentwire.BootRequest{MAC: mac, DiskSize: 4 << 20, BootToken: boot}); status(err) != http.StatusConflict || rep.Token != "" ||
		!strings.Contains(err.Error(), "already answered") {
		t.Fatalf("a spent boot token: %+v, %v (want 409: already answered)", rep, err)
	}
	if task, _ := r.inv.Task(ctx, "capture/3/run2"); task.Finished() {
		t.Fatalf("a spent boot token sent again failed the task: %+v", task)
	}
	sniffer := &agent.Client{Region: r.url, MAC: mac, HTTP: from("127.0.0.78")}
	if _, err := sniffer.Boot(ctx, agentwire.BootRequest{MAC: mac, DiskSize: 4 << 20, BootToken: boot}); status(err) != http.StatusConflict {
		t.Fatalf("a spent boot token from another address: %v", err)
	}
}

// task2 sets up another task for an enrolled terminal.
func (r *region) task2(t *testing.T, mac, id string, kind agentwire.Kind, image string) {
	t.Helper()
	ctx := context.Background()
	if _, err := r.inv.StartTask(ctx, taskOf(id, mac, kind, image), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := r.inv.SetBootAction(ctx, mac, bootActionOf(taskOf(id, mac, kind, image), time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
}

// A network-booted terminal's result is taken only once its claim has stood for Quiet, so a
// machine that claimed the boot first cannot finish before the real terminal shows up.
func TestResultWaitsForTheClaimToSettle(t *testing.T) {
	for _, tc := range []struct {
		name string
		live bool // the quiet time is the region's live setting (QuietFunc)
		// settle ends the quiet time: the clock passes it, or central lowers it
		settle func(clock, quiet *atomic.Int64, now time.Time)
	}{
		{"the clock passes the quiet time", false, func(clock, _ *atomic.Int64, now time.Time) {
			clock.Store(now.Add(time.Minute + time.Second).UnixNano())
		}},
		{"central lowers the quiet time while the region runs", true, func(_, quiet *atomic.Int64, _ time.Time) {
			quiet.Store(0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { resultWaitsForTheClaim(t, tc.live, tc.settle) })
	}
}

func resultWaitsForTheClaim(t *testing.T, live bool, settle func(clock, quiet *atomic.Int64, now time.Time)) {
	r := newRegion(t)
	ctx := context.Background()
	const mac = "52:54:00:00:01:04"
	res := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 4), "lab")
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(disk, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	r.task(t, mac, "pc4", "deploy/4/run", "deploy", res.Version.ID.String())
	now := time.Now()
	var clock atomic.Int64 // the region's clock, moved by the test while handlers read it
	clock.Store(now.UnixNano())
	r.api.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	var quiet atomic.Int64
	quiet.Store(int64(time.Minute))
	if live {
		r.api.QuietFunc = func() time.Duration { return time.Duration(quiet.Load()) }
	} else {
		r.api.Quiet = time.Minute
	}
	boot := r.claim(t, mac, "127.0.0.1")
	a := r.agent(mac, disk)
	a.Key, a.BootToken = nil, boot
	// The agent's log is shown if the test fails: a deploy that fails mid-way waits for the
	// quiet time too before its failure is taken, and looks from here like one that stalled.
	var logs logbuf.Buffer
	a.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	actx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	// The agent writes the disk, then waits: the region answers 425 until the minute is over.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		task, _ := r.inv.Task(ctx, "deploy/4/run")
		if task.Finished() {
			t.Fatalf("task finished before its claim settled: %+v\nagent's log:\n%s", task, logs.String())
		}
		// The agent's last report before its result: the disk written and verified.
		var p agentwire.Progress
		if json.Unmarshal([]byte(task.Progress), &p) == nil && p.Phase == agentwire.PhaseVerifying && p.Total > 0 && p.Done == p.Total {
			break
		}
		if l := logs.String(); strings.Contains(l, "task failed") || strings.Contains(l, "task ended by the region") {
			t.Fatalf("the agent's deploy ended early: %+v\nagent's log:\n%s", task, l)
		}
		select {
		case err := <-done:
			t.Fatalf("the agent ended (%v) before the deploy's end: %+v\nagent's log:\n%s", err, task, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("deploy did not reach its end: %+v\nagent's log:\n%s", task, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // verifying 4 MiB takes milliseconds; the report waits

	if task, _ := r.inv.Task(ctx, "deploy/4/run"); task.Finished() {
		t.Fatalf("task finished before its claim settled: %+v", task)
	}
	settle(&clock, &quiet, now)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the agent did not finish once the claim settled\nagent's log:\n%s", logs.String())
	}
	if task, _ := r.inv.Task(ctx, "deploy/4/run"); task.State != state.TaskDone {
		t.Fatalf("task: %+v", task)
	}
}

// Finding: a spoofed command poll swallowed the victim's reboot and hid it from Wake-on-LAN.
func TestCommandPollsMustBeSigned(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	const mac = "52:54:00:00:01:05"
	r.enroll(t, mac, "pc5")
	r.api.Send(mac, "reboot")
	for _, c := range []*agent.Client{
		{Region: r.url, MAC: mac}, // unsigned
		{Region: r.url, MAC: mac, Key: make([]byte, state.AgentKeySize)},                 // a guessed key
		{Region: r.url, MAC: "52:54:00:00:01:06", Key: make([]byte, state.AgentKeySize)}, // another MAC
	} {
		if _, err := c.Command(ctx, "0s"); status(err) != http.StatusUnauthorized {
			t.Fatalf("poll %+v: %v", c, err)
		}
	}
	if r.api.Connected(mac) {
		t.Fatal("refused polls made the terminal look connected")
	}
	// A signed poll read off the wire cannot be sent again.
	var replay *http.Request
	rt := roundTripper(func(req *http.Request) (*http.Response, error) {
		replay = req.Clone(ctx)
		return http.DefaultTransport.RoundTrip(req)
	})
	owner := &agent.Client{Region: r.url, MAC: mac, Key: r.keys[mac], HTTP: &http.Client{Transport: rt}}
	if cmd, err := owner.Command(ctx, "0s"); err != nil || cmd != "reboot" {
		t.Fatalf("the terminal's own poll: %q, %v", cmd, err)
	}
	r.api.Send(mac, "poweroff")
	resp, err := http.DefaultClient.Do(replay)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed poll: %d", resp.StatusCode)
	}
	if cmd, _ := owner.Command(ctx, "0s"); cmd != "poweroff" {
		t.Fatalf("the command a replay tried to take: %q", cmd)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Finding: uploads had no quota. A capture may upload what its disk implies, and no more.
func TestUploadQuota(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	const mac = "52:54:00:00:01:07"
	r.task(t, mac, "pc7", "capture/7/run", "capture", "lab")
	c := &agent.Client{Region: r.url, MAC: mac, Key: r.keys[mac]}
	rep, err := c.Boot(ctx, agentwire.BootRequest{MAC: mac, Disk: "disk", DiskSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c.Token, c.Key = rep.Token, nil
	ti, err := c.Task(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, ti.ChunkSize)
	rand.Read(data)
	id := ti.Hash.Sum(data)
	frame := store.NewCodec(0).Compress(nil, data)
	var batch []byte
	for len(batch)+len(frame)+40 < agentwire.MaxBatchBytes/4 {
		batch = agentwire.AppendBatch(batch, id, frame)
	}
	// 2 × 1 MiB + 64 MiB: the fifth 16 MiB batch is over.
	sent := 0
	for ; sent < 10; sent++ {
		if err := c.Upload(ctx, batch); err != nil {
			if status(err) != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "may upload at most") {
				t.Fatalf("upload %d: %v", sent, err)
			}
			break
		}
	}
	if sent != 4 {
		t.Fatalf("%d batches of %d bytes taken for a 1 MiB disk", sent, len(batch))
	}
}
