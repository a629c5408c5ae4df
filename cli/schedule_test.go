package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"tms/activities"
	"tms/devtemporal"
	"tms/workers"
)

// soon is an --at time some seconds ahead of the real clock (the server fires by it; ahead
// enough that creating a schedule or two on a loaded machine does not overtake it), in
// RFC 3339; the commands' own clock (testClock) is earlier still, so it is in the future.
func soon(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }

// payloadString decodes one memo or search attribute value.
// within retries check until d has passed: a firing waits for its time, then for a worker,
// on a machine that may be busy.
func within(t *testing.T, d time.Duration, what string, check func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !check(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %s for %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func payloadString(t *testing.T, p *commonpb.Payload) string {
	t.Helper()
	var s string
	if p == nil {
		return ""
	}
	if err := converter.GetDefaultDataConverter().FromPayload(p, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestScheduleCommandsOverTemporal(t *testing.T) {
	run, version, addr := adminSetupAt(t)
	c, err := client.Dial(client.Options{HostPort: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	show := func(name string) scheduleDetail {
		return decode[scheduleDetail](t, must(t, run, "schedule", "show", name, "--json"))
	}

	// Bad input is refused before anything is created.
	fail(t, run, 2, "give --at TIME or --cron EXPR", "schedule", "create", "x", "image", "share", "lab", "--to", "region-a")
	fail(t, run, 2, "give --at TIME or --cron EXPR", "schedule", "create", "x", "--at", "09:00", "--cron", "@daily", "image", "share", "lab", "--to", "region-a")
	fail(t, run, 2, "TASK is missing", "schedule", "create", "x", "--cron", "@daily")
	fail(t, run, 2, `field 2 (hour) "25": 25 is out of range 0-23`, "schedule", "create", "x", "--cron", "0 25 * * *", "image", "share", "lab", "--to", "region-a")
	fail(t, run, 2, `"image ls" is not a task command`, "schedule", "create", "x", "--cron", "@daily", "image", "ls")
	fail(t, run, 2, `schedule name "Bad Name"`, "schedule", "create", "Bad Name", "--cron", "@daily", "image", "share", "lab", "--to", "region-a")
	fail(t, run, 1, "unknown region nowhere; known: region-a, region-b", "schedule", "create", "x", "--cron", "@daily", "image", "share", "lab", "--to", "nowhere")
	fail(t, run, 2, `--timezone: time zone "Mars/Olympus" is not an IANA zone name`, "schedule", "create", "x", "--cron", "@daily", "--timezone", "Mars/Olympus", "image", "share", "lab", "--to", "region-a")
	// testClock is 08:00 in Berlin, region-a's zone.
	fail(t, run, 2, `--at "07:00" is in the past: 2026-12-02 07:00:00 in Europe/Berlin`, "schedule", "create", "x", "--at", "07:00", "image", "share", "lab", "--to", "region-a")
	fail(t, run, 1, "region region-b has not reported its time zone", "schedule", "create", "x", "--cron", "@daily", "image", "share", "lab", "--to", "region-b")
	fail(t, run, 1, "no schedule x ('tms schedule ls' lists them)", "schedule", "show", "x")
	for _, op := range []string{"pause", "resume", "trigger", "rm"} {
		fail(t, run, 1, "no schedule x", "schedule", op, "x")
	}

	// An --at schedule fires once, a few seconds later: the share finds lab in region-a and
	// completes. The task is an ordinary one, tagged like the command's, and Temporal names its
	// schedule in TemporalScheduledById.
	out := must(t, run, "schedule", "create", "share-lab", "--at", soon(15*time.Second), "image", "share", "lab", "--to", "region-a")
	if !strings.Contains(out, "created schedule share-lab: share of lab to region region-a, at 2026-") || !strings.Contains(out, "Europe/Berlin; next firing") {
		t.Fatalf("schedule create: %s", out)
	}
	fail(t, run, 1, "schedule share-lab exists already", "schedule", "create", "share-lab", "--cron", "@daily", "image", "share", "lab", "--to", "region-a")
	var d scheduleDetail
	within(t, time.Minute, "the --at schedule to fire and its share to complete", func() bool {
		d = show("share-lab")
		return len(d.Firings) == 1 && d.Firings[0].Status == "Completed"
	})
	if d.Fired != 1 || d.Remaining == nil || *d.Remaining != 0 || d.Next != nil || d.Kind != "share" || d.Region != "region-a" || d.Image != "lab" ||
		!strings.HasPrefix(d.Firings[0].Task, "share/lab/region-a-") || d.CatchupWindow != "10m" || d.Timezone != "Europe/Berlin" {
		t.Fatalf("share-lab after its firing: %+v", d)
	}
	task := d.Firings[0].Task
	if got := must(t, run, "task", "show", task); !strings.Contains(got, "version "+version[:12]+" was already there") {
		t.Fatalf("task show %s:\n%s", task, got)
	}
	resp, err := c.DescribeWorkflowExecution(ctx, task, "")
	if err != nil {
		t.Fatal(err)
	}
	info := resp.GetWorkflowExecutionInfo()
	attrs := info.GetSearchAttributes().GetIndexedFields()
	if by := payloadString(t, attrs["TemporalScheduledById"]); by != "share-lab" {
		t.Errorf("TemporalScheduledById = %q, want share-lab", by)
	}
	if k, r := payloadString(t, attrs["TmsKind"]), payloadString(t, attrs["TmsRegion"]); k != "share" || r != "region-a" {
		t.Errorf("the firing's tags: kind %q region %q", k, r)
	}
	if s := payloadString(t, info.GetMemo().GetFields()[memoKeySchedule]); s != "share-lab" {
		t.Errorf("the firing's memo names schedule %q", s)
	}
	// (task ls --region on main selects a region's queue, where shares do not run.)
	eventually(t, "the firing to be listed among the tasks", func() bool {
		for _, r := range decode[[]taskRow](t, must(t, run, "task", "ls", "--all", "--json")) {
			if r.ID == task && r.Status == "Completed" {
				return true
			}
		}
		return false
	})
	if text := must(t, run, "schedule", "show", "share-lab"); !strings.Contains(text, "Recent firings:") || !strings.Contains(text, task+"  Completed") ||
		!strings.Contains(text, "tms image share lab --to region-a") {
		t.Fatalf("schedule show:\n%s", text)
	}

	// A firing whose task names what does not exist fails with the reason; the schedule stays.
	at := soon(15 * time.Second)
	must(t, run, "schedule", "create", "share-nope", "--at", at, "image", "share", "nope", "--to", "region-a")
	must(t, run, "schedule", "create", "deploy-gone", "--at", at, "deploy", "--region", "region-a", "--group", "gone", "lab")
	for name, reason := range map[string]string{"share-nope": "image nope is not in the catalog", "deploy-gone": "region region-a has no group gone"} {
		within(t, time.Minute, "the firing of "+name+" to fail", func() bool {
			d = show(name)
			return len(d.Firings) == 1 && d.Firings[0].Status == "Failed"
		})
		if d.Firings[0].Failure != reason {
			t.Fatalf("%s's firing: %+v, want it to fail with %q", name, d.Firings[0], reason)
		}
	}
	must(t, run, "schedule", "rm", "deploy-gone")

	// A --cron schedule, in the region's zone or in the one --timezone names, is listed with
	// its next firing.
	must(t, run, "schedule", "create", "morning", "--cron", "0 7 * * mon-fri", "deploy", "--region", "region-a", "--group", "room1", "lab")
	must(t, run, "schedule", "create", "ny", "--cron", "30 6 * * SUN", "--timezone", "America/New_York", "image", "share", "lab", "--to", "region-a")
	var rows []scheduleRow
	eventually(t, "four schedules to be listed", func() bool {
		rows = decode[[]scheduleRow](t, must(t, run, "schedule", "ls", "--json"))
		return len(rows) == 4
	})
	byName := map[string]scheduleRow{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	m := byName["morning"]
	if m.Next == nil || m.Kind != "deploy" || m.Target != "group room1" || m.Image != "lab" || m.Spec != "cron 0 7 * * mon-fri" || m.Paused {
		t.Fatalf("ls: morning: %+v", m)
	}
	if n := m.Next.In(berlin); n.Hour() != 7 || n.Minute() != 0 || n.Weekday() == time.Saturday || n.Weekday() == time.Sunday || !n.After(time.Now()) {
		t.Fatalf("morning's next firing %v is not a weekday at 07:00 in Berlin", n)
	}
	ny, _ := time.LoadLocation("America/New_York")
	if n := byName["ny"]; n.Timezone != "America/New_York" || n.Next == nil || n.Next.In(ny).Hour() != 6 || n.Next.In(ny).Minute() != 30 || n.Next.In(ny).Weekday() != time.Sunday {
		t.Fatalf("ls: ny: %+v", n)
	}
	if sl := byName["share-lab"]; sl.Last == nil || sl.Last.Status != "Completed" || sl.Next != nil || !sl.Done || m.Done {
		t.Fatalf("ls: share-lab: %+v", sl)
	}
	text := must(t, run, "schedule", "ls")
	for _, want := range []string{"morning", "deploy", "group room1", "cron 0 7 * * mon-fri", "07:00 Europe/Berlin", "active", "done", "Failed: image nope is not in the catalog"} {
		if !strings.Contains(text, want) {
			t.Errorf("schedule ls lacks %q:\n%s", want, text)
		}
	}

	// Pause and resume, with a note.
	must(t, run, "schedule", "pause", "morning", "--note", "exam week")
	if d = show("morning"); !d.Paused || d.Note != "exam week" {
		t.Fatalf("paused: %+v", d)
	}
	must(t, run, "schedule", "resume", "morning")
	if d = show("morning"); d.Paused {
		t.Fatalf("resumed: %+v", d)
	}

	// Trigger fires now; a firing that finds the previous task still running is skipped and
	// counted. A capture waits for pc1's agent, which never comes here.
	must(t, run, "terminal", "enroll", "--region", "region-a", "52:54:00:00:00:01", "pc1")
	must(t, run, "schedule", "create", "cap", "--cron", "0 0 1 1 *", "image", "capture", "--region", "region-a", "--terminal", "pc1", "lab2")
	must(t, run, "schedule", "trigger", "cap")
	eventually(t, "the triggered capture to run", func() bool {
		d = show("cap")
		return len(d.Running) == 1
	})
	must(t, run, "schedule", "trigger", "cap")
	eventually(t, "the second trigger to be skipped", func() bool {
		d = show("cap")
		return d.Skipped == 1
	})
	if d.Fired != 1 || len(d.Firings) != 1 || d.Firings[0].Status != "Running" || !strings.HasPrefix(d.Firings[0].Task, "capture/region-a/pc1/lab2-") {
		t.Fatalf("cap after two triggers: %+v", d)
	}
	if text := must(t, run, "schedule", "show", "cap"); !strings.Contains(text, "1 firing(s): the previous task was still running") {
		t.Fatalf("schedule show cap:\n%s", text)
	}
	must(t, run, "task", "cancel", d.Firings[0].Task)

	// rm deletes; the tasks it started stay.
	for _, n := range []string{"morning", "ny", "cap", "share-nope"} {
		if out := must(t, run, "schedule", "rm", n); !strings.Contains(out, "schedule "+n+" removed") {
			t.Fatalf("rm: %s", out)
		}
	}
	fail(t, run, 1, "no schedule morning", "schedule", "show", "morning")
	fail(t, run, 1, "no schedule morning", "schedule", "rm", "morning")
	eventually(t, "one schedule to be left", func() bool {
		rows = decode[[]scheduleRow](t, must(t, run, "schedule", "ls", "--json"))
		return len(rows) == 1 && rows[0].Name == "share-lab"
	})
	must(t, run, "task", "show", task)
}

func TestSchedulesSurviveATemporalRestart(t *testing.T) {
	dir := t.TempDir()
	sc, _ := testState(t, activities.RegionInfo{ID: "room3", Timezone: "Europe/Vienna"})
	start := func() (tmsRun, func()) {
		srv, err := devtemporal.Start(devtemporal.Options{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial(client.Options{HostPort: srv.Address()})
		if err != nil {
			t.Fatal(err)
		}
		w := workers.NewCentral(c, &activities.Central{Catalog: sc})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return runnerAt(srv.Address()), func() {
			w.Stop()
			c.Close()
			srv.Stop()
		}
	}
	run, stop := start()
	must(t, run, "schedule", "create", "room3-off", "--cron", "0 18 * * *", "image", "share", "exam", "--to", "room3")
	must(t, run, "schedule", "pause", "room3-off", "--note", "holidays")
	before := decode[scheduleDetail](t, must(t, run, "schedule", "show", "room3-off", "--json"))
	stop()

	run, stop = start()
	defer stop()
	var rows []scheduleRow
	eventually(t, "the schedule to be listed after the restart", func() bool {
		rows = decode[[]scheduleRow](t, must(t, run, "schedule", "ls", "--json"))
		return len(rows) == 1
	})
	r := rows[0]
	vienna, _ := time.LoadLocation("Europe/Vienna")
	if r.Name != "room3-off" || !r.Paused || r.Note != "holidays" || r.Next == nil || !r.Next.Equal(*before.Next) || r.Next.In(vienna).Hour() != 18 ||
		r.Spec != "cron 0 18 * * *" || r.Timezone != "Europe/Vienna" {
		t.Fatalf("after the restart: %+v (before: %+v)", r, before.scheduleRow)
	}
	must(t, run, "schedule", "resume", "room3-off")
}
