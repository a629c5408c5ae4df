package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/workflows"
)

func TestParseAtReadsEachFormInTheZone(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// testClock is 07:00 UTC, 08:00 in Berlin.
	a := &App{Now: func() time.Time { return testClock }}
	for _, tc := range []struct {
		name, at string
		want     time.Time
	}{
		{"clock today", "09:30", time.Date(2026, 12, 2, 9, 30, 0, 0, berlin)},
		{"clock with seconds", "08:00:01", time.Date(2026, 12, 2, 8, 0, 1, 0, berlin)},
		{"date and clock", "2026-12-03 07:00", time.Date(2026, 12, 3, 7, 0, 0, 0, berlin)},
		{"date and clock with seconds", "2026-12-03 07:00:30", time.Date(2026, 12, 3, 7, 0, 30, 0, berlin)},
		{"RFC 3339 keeps its offset", "2026-12-02T07:30:00Z", time.Date(2026, 12, 2, 8, 30, 0, 0, berlin)},
		{"spaces around", " 2026-12-03 07:00 ", time.Date(2026, 12, 3, 7, 0, 0, 0, berlin)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.parseAt(tc.at, berlin)
			if err != nil || !got.Equal(tc.want) || got.Location() != berlin {
				t.Fatalf("parseAt(%q) = %v, %v; want %v", tc.at, got, err, tc.want)
			}
		})
	}
}

func TestParseAtSaysWhatIsWrong(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	a := &App{Now: func() time.Time { return testClock }}
	for _, tc := range []struct {
		name, at string
		want     []string
	}{
		{"empty", "", []string{"--at is empty", "HH:MM"}},
		{"earlier today", "07:59", []string{`--at "07:59" is in the past`, "2026-12-02 07:59:00 in Europe/Berlin", "2026-12-02 08:00:00 there now"}},
		{"now exactly", "08:00", []string{"in the past"}},
		{"yesterday", "2026-12-01 09:00", []string{"in the past", "2026-12-01 09:00:00 in Europe/Berlin"}},
		{"RFC 3339 in the past", "2026-12-02T06:00:00Z", []string{"in the past", "2026-12-02 07:00:00 in Europe/Berlin"}},
		{"hour out of range", "25:00", []string{`--at "25:00": hour out of range`}},
		{"minute out of range", "2026-12-03 07:61", []string{"minute out of range"}},
		{"month out of range", "2026-13-03 07:00", []string{"month out of range"}},
		{"day out of range", "2026-02-30 07:00", []string{"day out of range"}},
		{"no minutes", "7", []string{`--at "7"`, "want HH:MM (today), YYYY-MM-DD HH:MM, or RFC 3339"}},
		{"words", "tomorrow", []string{`--at "tomorrow"`, "cannot read", "hour"}},
		{"RFC 3339 without offset", "2026-12-03T07:00:00", []string{"zone offset"}},
		{"date without time", "2026-12-03", []string{`--at "2026-12-03"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.parseAt(tc.at, berlin)
			if err == nil {
				t.Fatalf("parseAt(%q) accepted", tc.at)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("parseAt(%q) = %v\nwant it to hold %q", tc.at, err, w)
				}
			}
		})
	}
}

func TestCheckCron(t *testing.T) {
	for _, ok := range []string{"0 7 * * mon-fri", "0 18 * * *", "*/15 7-17 * * 1-5", "30 6 1,15 jan-jun,SEP 0", "0 0 * * sun", "@daily", "@midnight", "0 9 * * 7", "0 9 * * 5-7", "5,10-20/5 * * * *", "0 7 * * MON-FRI"} {
		if err := checkCron(ok); err != nil {
			t.Errorf("checkCron(%q) = %v", ok, err)
		}
	}
	for _, tc := range []struct{ expr, want string }{
		{"0 7 * *", "has 4 field(s); want 5"},
		{"0 7 * * * 2026", "has 6 field(s)"},
		{"", "has 0 field(s)"},
		{"60 7 * * *", `field 1 (minute) "60": 60 is out of range 0-59`},
		{"0 24 * * *", `field 2 (hour) "24": 24 is out of range 0-23`},
		{"0 7 0 * *", `field 3 (day of month) "0": 0 is out of range 1-31`},
		{"0 7 * 13 *", `field 4 (month) "13": 13 is out of range 1-12`},
		{"0 7 * foo *", `field 4 (month) "foo": "foo" is not a number from 1 to 12 or a name (jan, feb`},
		{"0 7 * * 8", `field 5 (day of week) "8": 8 is out of range 0-7`},
		{"0 7 * * fri-mon", `field 5 (day of week) "fri-mon": range fri-mon runs backwards`},
		{"0 x * * *", `field 2 (hour) "x": "x" is not a number from 0 to 23`},
		{"*/0 * * * *", `field 1 (minute) "*/0": step "0" is not a positive number`},
		{"0 7,,8 * * *", `field 2 (hour) "7,,8": empty list item`},
		{"0 7 * * 1-", `field 5 (day of week) "1-": "" is not a number`},
		{"@fortnightly", "unknown shorthand"},
		{"@Daily", "unknown shorthand"},
	} {
		err := checkCron(tc.expr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkCron(%q) = %v, want %q", tc.expr, err, tc.want)
		}
	}
}

func TestLoadZoneRefusesWhatIsNoIANAName(t *testing.T) {
	for _, bad := range []string{"", "Local", "Europe/Atlantis", "../etc/passwd"} {
		if _, err := loadZone(bad); err == nil || !strings.Contains(err.Error(), "not an IANA zone name") {
			t.Errorf("loadZone(%q) = %v", bad, err)
		}
	}
	if loc, err := loadZone("Asia/Tokyo"); err != nil || loc.String() != "Asia/Tokyo" {
		t.Errorf("loadZone(Asia/Tokyo) = %v, %v", loc, err)
	}
}

func TestPlanTaskTakesTheTaskOfATaskCommand(t *testing.T) {
	a := &App{Now: func() time.Time { return testClock }}
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		task     []string
		readable string
		tags     workflows.TaskTags
		queue    string
	}{
		{"deploy to a group", []string{"deploy", "--region", "region-a", "--group", "room1", "lab"}, "deploy/region-a/room1/lab",
			workflows.TaskTags{Region: "region-a", Kind: workflows.TaskDeploy, Group: "room1", Image: "lab"}, activities.RegionQueue("region-a")},
		{"share, whose --to is the task's flag", []string{"image", "share", "lab", "--to", "region-b"}, "share/lab/region-b",
			workflows.TaskTags{Region: "region-b", Kind: workflows.TaskShare, Image: "lab"}, activities.CentralQueue},
		{"capture", []string{"image", "capture", "--region", "region-a", "--terminal", "pc1", "lab"}, "capture/region-a/pc1/lab",
			workflows.TaskTags{Region: "region-a", Kind: workflows.TaskCapture, Terminals: []string{"pc1"}, Image: "lab"}, activities.RegionQueue("region-a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.planTask(ctx, tc.task)
			if err != nil {
				t.Fatal(err)
			}
			if got.readable != tc.readable || got.ID != tc.readable+testStamp || got.Queue != tc.queue ||
				got.Tags.Kind != tc.tags.Kind || got.Tags.Region != tc.tags.Region || got.Tags.Group != tc.tags.Group || got.Tags.Image != tc.tags.Image ||
				strings.Join(got.Tags.Terminals, ",") != strings.Join(tc.tags.Terminals, ",") {
				t.Fatalf("planTask(%q) = %+v (readable %q)", tc.task, got.taskRequest, got.readable)
			}
		})
	}
}

func TestPlanTaskRefusesWhatIsNoTask(t *testing.T) {
	a := &App{Now: func() time.Time { return testClock }}
	for _, tc := range []struct {
		name string
		task []string
		want string
	}{
		{"a listing", []string{"image", "ls"}, `"image ls" is not a task command (image ls): a schedule runs deploy, image capture, image share, update, power on`},
		{"an inventory change", []string{"group", "rm", "--region", "region-a", "room1"}, "is not a task command"},
		{"a server", []string{"region", "--config", "/etc/tms/region.yaml"}, "is not a task command"},
		{"unknown command", []string{"frobnicate"}, `TASK "frobnicate" is not a tms command`},
		{"tms itself", []string{"tms", "deploy"}, "is not a tms command"},
		{"a task command missing its flag", []string{"deploy", "--group", "room1", "lab"}, `TASK "deploy --group room1 lab": tms deploy: --region is required`},
		{"a task command's bad flag", []string{"image", "share", "lab", "--to"}, "flag needs an argument"},
		{"help", []string{"deploy", "--help"}, "asked for no task"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.planTask(context.Background(), tc.task)
			var ue usageError
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ue) {
				t.Fatalf("planTask(%q) = %v, want a usage error holding %q", tc.task, err, tc.want)
			}
		})
	}
}

func FuzzCheckCron(f *testing.F) {
	for _, s := range []string{"0 7 * * mon-fri", "*/15 7-17 1,15 jan-jun 0", "@daily", "60 7 * * *", "0 7 * * fri-mon", "1-/ , * * *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		if checkCron(expr) == nil && !strings.HasPrefix(strings.TrimSpace(expr), "@") && len(strings.Fields(expr)) != 5 {
			t.Fatalf("checkCron accepted %q", expr)
		}
	})
}

func FuzzParseAt(f *testing.F) {
	for _, s := range []string{"09:30", "2026-12-03 07:00", "2026-12-02T07:30:00Z", "25:00", "tomorrow", ""} {
		f.Add(s)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	a := &App{Now: func() time.Time { return testClock }}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := a.parseAt(s, berlin)
		if err == nil && !got.After(testClock) {
			t.Fatalf("parseAt(%q) = %v, not after now", s, got)
		}
	})
}

func TestPlanTaskOnTheRealClockDropsTheStamp(t *testing.T) {
	for range 3 {
		got, err := (&App{}).planTask(context.Background(), []string{"deploy", "--region", "region-a", "--group", "room1", "lab"})
		if err != nil || got.readable != "deploy/region-a/room1/lab" || !strings.HasPrefix(got.ID, got.readable+"/") {
			t.Fatalf("planTask = %+v, %v", got, err)
		}
		time.Sleep(400 * time.Millisecond) // across a second's edge at least once
	}
}
