package cli

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/internal/temporaltest"
	"tms/workflows"
)

func TestTerminalLinesReadAnyTasksTerminals(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		running   bool
		want      []terminalLine
	}{
		{"power progress", `{"Terminals":[{"Terminal":"pc1","OK":false,"Outcome":""},{"Terminal":"pc2","OK":true,"Outcome":"woke"}]}`, true,
			[]terminalLine{{Terminal: "pc1", State: "under way", Details: map[string]json.RawMessage{"Outcome": json.RawMessage(`""`)}},
				{Terminal: "pc2", State: "ok", Details: map[string]json.RawMessage{"Outcome": json.RawMessage(`"woke"`)}}}},
		{"power result", `{"Terminals":[{"Terminal":"pc1","OK":false,"Outcome":"no-answer","Reason":"not seen"}]}`, false,
			[]terminalLine{{Terminal: "pc1", State: "failed", Details: map[string]json.RawMessage{"Outcome": json.RawMessage(`"no-answer"`), "Reason": json.RawMessage(`"not seen"`)}}}},
		{"deploy result", `{"Version":"v","Terminals":[{"Terminal":"pc1","MAC":"m1","OK":true,"Written":3},{"Terminal":"pc2","OK":false,"Error":"busy"}]}`, false,
			[]terminalLine{{Terminal: "pc1", State: "ok", Details: map[string]json.RawMessage{"MAC": json.RawMessage(`"m1"`), "Written": json.RawMessage(`3`)}},
				{Terminal: "pc2", State: "failed", Error: "busy"}}},
		{"another task's result", `{"Terminals":[{"Terminal":"pc1","OK":true,"Decision":"incremental"}]}`, false,
			[]terminalLine{{Terminal: "pc1", State: "ok", Details: map[string]json.RawMessage{"Decision": json.RawMessage(`"incremental"`)}}}},
		{"deploy progress", `{"Phase":"deploying","Terminals":[{"Terminal":"pc1","Phase":"failed","Error":"busy"},{"Terminal":"pc2","Phase":"deploying"}]}`, true,
			[]terminalLine{{Terminal: "pc1", State: "failed", Error: "busy"}, {Terminal: "pc2", State: "deploying"}}},
		{"no terminals", `{"Version":"v"}`, false, nil},
		{"not JSON", `nope`, false, nil},
		{"wrong types", `{"Terminals":[{"Terminal":5,"OK":"yes"}]}`, false,
			[]terminalLine{{State: "?", Details: map[string]json.RawMessage{"Terminal": json.RawMessage(`5`), "OK": json.RawMessage(`"yes"`)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := terminalLines(json.RawMessage(tc.raw), tc.running)
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tc.want)
			if string(g) != string(w) {
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
	l := terminalLine{Details: map[string]json.RawMessage{"MAC": json.RawMessage(`"m"`), "Written": json.RawMessage(`3`), "Decision": json.RawMessage(`"stop"`)}}
	if got := l.detailText(); got != "Decision=stop Written=3" {
		t.Fatalf("detail text %q", got)
	}
}

// TestTaskCommandsOverTemporal runs the task commands against a real Temporal server and
// region-a's worker (no terminal ever answers): a capture keeps pc1 busy, so a deploy to its
// group refuses pc1 and goes on with pc2; the listing's filters; tasks asked for later, changed
// and canceled before they start; a started task refusing change; rm of finished tasks.
func TestTaskCommandsOverTemporal(t *testing.T) {
	run, _, addr := adminSetupAt(t)
	tc, err := client.Dial(client.Options{HostPort: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	must(t, run, "terminal", "enroll", "--region", "region-a", "52:54:00:00:00:01", "pc1")
	must(t, run, "terminal", "enroll", "--region", "region-a", "52:54:00:00:00:02", "pc2")
	must(t, run, "group", "create", "--region", "region-a", "room1")
	must(t, run, "group", "add", "--region", "region-a", "room1", "pc1", "pc2")

	capture := "capture/region-a/pc1/lab2" + testStamp
	deploy := "deploy/region-a/room1/lab" + testStamp
	must(t, run, "image", "capture", "--region", "region-a", "--terminal", "pc1", "lab2")
	eventually(t, "the capture to wait for pc1", func() bool {
		return len(decode[taskDetail](t, must(t, run, "task", "show", capture, "--json")).Pending) > 0
	})

	// pc1 is busy with the capture: the deploy refuses it, says why, and goes on with pc2.
	must(t, run, "deploy", "--region", "region-a", "--group", "room1", "lab")
	var d taskDetail
	eventually(t, "the deploy to refuse pc1 and deploy pc2", func() bool {
		d = decode[taskDetail](t, must(t, run, "task", "show", deploy, "--json"))
		return len(d.Terminals) == 2 && d.Terminals[0].State == "failed" && d.Terminals[1].State == "deploying"
	})
	if want := "terminal pc1 is busy with task " + capture + " (capture, started "; !strings.HasPrefix(d.Terminals[0].Error, want) ||
		!strings.HasSuffix(d.Terminals[0].Error, "); this task did not touch it") {
		t.Fatalf("pc1 in the deploy: %q, want %q…", d.Terminals[0].Error, want)
	}
	if d.Kind != "deploy" || d.Region != "region-a" || d.Group != "room1" || !slices.Equal(d.Targets, []string{"pc1", "pc2"}) || d.State != "running" {
		t.Fatalf("task show of the deploy: %+v", d)
	}
	terms := decode[[]terminalRow](t, must(t, run, "terminal", "ls", "--region", "region-a", "--json"))
	if terms[0].Task != capture || terms[1].Task != deploy+"/pc2" {
		t.Fatalf("boot actions: pc1 %q, pc2 %q", terms[0].Task, terms[1].Task)
	}
	if text := must(t, run, "task", "show", deploy); !regexp.MustCompile(`(?m)^pc1 +failed +terminal pc1 is busy`).MatchString(text) ||
		!strings.Contains(text, "group room1") {
		t.Fatalf("task show text:\n%s", text)
	}

	// A share asked for later waits, listed as waiting.
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	share := "share/lab/region-a" + testStamp
	if out := must(t, run, "image", "share", "lab", "--to", "region-a", "--at", at.Format(time.RFC3339)); !strings.Contains(out, "waiting until") {
		t.Fatalf("share --at: %s", out)
	}

	ids := func(args ...string) []string {
		rows := decode[[]taskRow](t, must(t, run, append([]string{"task", "ls", "--json"}, args...)...))
		var out []string
		for _, r := range rows {
			out = append(out, r.ID)
		}
		slices.Sort(out)
		return out
	}
	all := []string{capture, deploy, share}
	slices.Sort(all)
	eventually(t, "the listing to hold the three tasks", func() bool { return slices.Equal(ids(), all) })
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--region", "region-a"}, all},
		{[]string{"--region", "region-b"}, nil},
		{[]string{"--kind", "capture"}, []string{capture}},
		{[]string{"--kind", "share"}, []string{share}},
		{[]string{"--group", "room1"}, []string{deploy}},
		{[]string{"--terminal", "pc2"}, []string{deploy}},
		{[]string{"--terminal", "pc1"}, []string{capture, deploy}},
		{[]string{"--terminal", "52:54:00:00:00:09"}, nil},
		{[]string{"--state", "waiting"}, []string{share}},
		{[]string{"--state", "running"}, all},
		{[]string{"--state", "failed"}, nil},
	} {
		if got := ids(tc.args...); !slices.Equal(got, tc.want) {
			t.Errorf("task ls %v = %v, want %v", tc.args, got, tc.want)
		}
	}
	text := must(t, run, "task", "ls")
	for _, want := range []string{`TASK +KIND +REGION +TARGET +IMAGE +STATE +STARTED +STARTED BY +SCHEDULE`,
		regexp.QuoteMeta(share) + ` +share +region-a +- +lab +waiting +at ` + at.Local().Format("2006-01-02 15:04") + ` +- +-`,
		regexp.QuoteMeta(deploy) + ` +deploy +region-a +group room1 +lab +running `} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("task ls text lacks %q:\n%s", want, text)
		}
	}
	fail(t, run, 2, "kinds: capture, deploy, update, power-on, power-off, reboot, share", "task", "ls", "--kind", "format")
	fail(t, run, 2, "states: waiting, running", "task", "ls", "--state", "paused")
	fail(t, run, 2, "neither a terminal name nor a MAC", "task", "ls", "--terminal", "pc1' OR TmsKind = 'x")

	// Modify before the start: time and image; the listing follows.
	later := at.Add(time.Hour)
	if out := must(t, run, "task", "modify", share, "--at", later.Format(time.RFC3339), "--image", "lab:latest"); !strings.Contains(out, "changed") ||
		!strings.Contains(out, "image lab:latest") {
		t.Fatalf("task modify: %s", out)
	}
	eventually(t, "the listing to follow the modify", func() bool {
		d := decode[taskDetail](t, must(t, run, "task", "show", share, "--json"))
		return d.Image == "lab:latest" && d.StartAt != nil && d.StartAt.Equal(later) && d.State == "waiting"
	})
	fail(t, run, 1, "this task's targets cannot be changed", "task", "modify", share, "--group", "room1")
	fail(t, run, 1, "image reference", "task", "modify", share, "--image", "lab:")
	fail(t, run, 2, "is in the past", "task", "modify", share, "--at", "2020-01-01T00:00:00Z")
	fail(t, run, 2, "nothing to change", "task", "modify", share)
	// A started task is not changed.
	fail(t, run, 1, "task "+capture+" started at ", "task", "modify", capture, "--image", "lab3")
	fail(t, run, 1, "it can no longer be changed: cancel it and start another", "task", "modify", capture, "--image", "lab3")

	// A deploy asked for later, retargeted from pc2 to the group, then canceled while it
	// waits: it touched nothing (pc2 still belongs to the first deploy).
	later2 := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	waiting := "deploy/region-a/pc2/lab" + testStamp
	must(t, run, "deploy", "--region", "region-a", "--terminal", "pc2", "lab", "--at", later2.Format(time.RFC3339))
	must(t, run, "task", "modify", waiting, "--group", "room1")
	eventually(t, "the retargeted deploy to be listed for room1", func() bool {
		return slices.Contains(ids("--group", "room1"), waiting) && !slices.Contains(ids("--terminal", "pc2"), waiting)
	})
	if out := must(t, run, "task", "cancel", waiting); !strings.Contains(out, "it had not started, so it touched nothing") {
		t.Fatalf("cancel of the waiting deploy: %s", out)
	}
	eventually(t, "the waiting deploy to be canceled", func() bool {
		return decode[taskDetail](t, must(t, run, "task", "show", waiting, "--json")).Status == "Canceled"
	})
	if d := decode[taskDetail](t, must(t, run, "task", "show", waiting, "--json")); len(d.Children) > 0 || len(d.Terminals) > 0 {
		t.Fatalf("a deploy canceled while it waited started work: %+v", d)
	}
	terms = decode[[]terminalRow](t, must(t, run, "terminal", "ls", "--region", "region-a", "--json"))
	if terms[1].Task != deploy+"/pc2" {
		t.Fatalf("pc2 after the waiting deploy's cancel: %+v", terms[1])
	}
	fail(t, run, 1, "has ended (canceled); it can no longer be changed", "task", "modify", waiting, "--image", "lab3")

	// rm: refused while running; a finished task leaves the listing with its children.
	fail(t, run, 1, "cancel it first", "task", "rm", deploy)
	must(t, run, "task", "cancel", deploy)
	must(t, run, "task", "cancel", capture)
	must(t, run, "task", "cancel", share)
	eventually(t, "the tasks to be canceled", func() bool {
		for _, id := range []string{deploy, capture, share, deploy + "/pc2"} {
			if s := decode[taskDetail](t, must(t, run, "task", "show", id, "--json")).Status; s != "Canceled" {
				t.Logf("%s: %s", id, s)
				return false
			}
		}
		return true
	})
	terms = decode[[]terminalRow](t, must(t, run, "terminal", "ls", "--region", "region-a", "--json"))
	if terms[0].BootAction != "local" || terms[1].BootAction != "local" {
		t.Fatalf("boot actions after the cancels: %+v", terms)
	}
	canceled := []string{capture, deploy, waiting, share}
	slices.Sort(canceled)
	eventually(t, "the canceled tasks to be listed as such", func() bool { return slices.Equal(ids("--state", "canceled"), canceled) })
	for name, id := range map[string]string{"TaskDeployBusy-deploy": deploy, "TaskDeployBusy-capture": capture,
		"TaskModified-share": share, "TaskModified-deploy": waiting} {
		temporaltest.SaveHistory(t, tc, id, "", name)
	}
	// Its two terminals' tasks: region-a holds lab, so the deploy started no share.
	if out := must(t, run, "task", "rm", deploy); !strings.Contains(out, "deleted with 2 child task(s)") {
		t.Fatalf("task rm: %s", out)
	}
	// Temporal deletes in the background, after the task's close has been processed.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
		c1, _, _ := run("task", "show", deploy)
		if c1 == 1 || time.Now().After(deadline) {
			break
		}
	}
	eventually(t, "the deleted deploy and its children to be gone", func() bool {
		c1, _, _ := run("task", "show", deploy)
		c2, _, _ := run("task", "show", deploy+"/pc2")
		listed := slices.Contains(ids("--all"), deploy)
		return c1 == 1 && c2 == 1 && !listed
	})
	fail(t, run, 1, "no task "+deploy, "task", "show", deploy)
	must(t, run, "task", "rm", waiting)

	// A task a schedule started names its schedule.
	sched, err := tc.ScheduleClient().Create(t.Context(), client.ScheduleOptions{ID: "nightly-share", TriggerImmediately: true,
		Action: &client.ScheduleWorkflowAction{ID: "share/lab/region-a/nightly", Workflow: workflows.ShareImage,
			Args: []any{workflows.ShareImageInput{Image: "lab", Target: "region-a"}}, TaskQueue: activities.CentralQueue,
			TypedSearchAttributes: workflows.TaskTags{Region: "region-a", Kind: workflows.TaskShare, Image: "lab"}.StartAttributes()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sched.Delete(context.Background()) })
	eventually(t, "the scheduled share to be listed with its schedule", func() bool {
		for _, r := range decode[[]taskRow](t, must(t, run, "task", "ls", "--kind", "share", "--state", "completed", "--json")) {
			if r.Schedule == "nightly-share" && strings.HasPrefix(r.ID, "share/lab/region-a/nightly") {
				text := must(t, run, "task", "show", r.ID)
				return regexp.MustCompile(`Schedule: +nightly-share`).MatchString(text) && regexp.MustCompile(`State: +completed`).MatchString(text)
			}
		}
		return false
	})
	eventually(t, "the second deleted task to leave the listing", func() bool {
		got := ids("--all")
		return !slices.Contains(got, waiting) && slices.Contains(got, capture)
	})
}
