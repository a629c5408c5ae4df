package state

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseRoster(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want []RosterLine
		err  string
	}{
		{"a header, notations of MACs, an empty and a missing group",
			"\xef\xbb\xbfMAC,Name,Group\n52:54:00:00:00:01,pc1,room1\n52-54-00-00-00-02, pc2 ,\r\n5254.0000.0003,pc3\n525400000004,pc4,room1\n# seat 5 is broken\n\nAA:BB:CC:DD:EE:FF,pc6,room2\n",
			[]RosterLine{
				{Line: 2, MAC: "52:54:00:00:00:01", Name: "pc1", Group: "room1"},
				{Line: 3, MAC: "52:54:00:00:00:02", Name: "pc2"},
				{Line: 4, MAC: "52:54:00:00:00:03", Name: "pc3"},
				{Line: 5, MAC: "52:54:00:00:00:04", Name: "pc4", Group: "room1"},
				{Line: 8, MAC: "aa:bb:cc:dd:ee:ff", Name: "pc6", Group: "room2"},
			}, ""},
		{"bad lines carry their problem",
			"52:54:00:00:00:01\n52:54:00:00:0x:01,pc1,\n52:54:00:00:00:02,pc 2,\n52:54:00:00:00:03,pc3,room 3\n52:54:00:00:00:04,pc4,a,b\n",
			[]RosterLine{
				{Line: 1, Problem: "1 field(s); want MAC,name,group (the group may be empty)"},
				{Line: 2, MAC: "52:54:00:00:0x:01", Name: "pc1", Problem: `"52:54:00:00:0x:01" is not a MAC address like aa:bb:cc:dd:ee:ff`},
				{Line: 3, MAC: "52:54:00:00:00:02", Name: "pc 2", Problem: `terminal name: "pc 2": character ' ' is not allowed (letters, digits, '.', '_', '-')`},
				{Line: 4, MAC: "52:54:00:00:00:03", Name: "pc3", Group: "room 3", Problem: `group name: "room 3": character ' ' is not allowed (letters, digits, '.', '_', '-')`},
				{Line: 5, Problem: "4 field(s); want MAC,name,group (the group may be empty)"},
			}, ""},
		{"only the first line may be a header", "52:54:00:00:00:01,pc1\nmac,name\n",
			[]RosterLine{{Line: 1, MAC: "52:54:00:00:00:01", Name: "pc1"}, {Line: 2, MAC: "mac", Name: "name", Problem: `"mac" is not a MAC address like aa:bb:cc:dd:ee:ff`}}, ""},
		{"a header alone lists nothing", "mac,name,group\n", nil, ""},
		{"broken quoting refuses the file, naming the line", "52:54:00:00:00:01,pc1\n52:54:00:00:00:02,\"pc2\n", nil, "line 2 is not CSV"},
		{"too many bytes", strings.Repeat("#\n", MaxRosterBytes/2+1), nil, "at most 262144 are accepted"},
		{"too many lines", strings.Repeat("52:54:00:00:00:01,pc1\n", MaxRosterLines+1), nil, "more than 4096 terminal lines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRoster([]byte(tc.file))
			if tc.err != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseRoster(f *testing.F) {
	f.Add([]byte("MAC,name,group\n52:54:00:00:00:01,pc1,room1\n525400000002,pc2,\n"))
	f.Add([]byte("\"a\"\"b\",c\n# x\n\n,,,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines, err := ParseRoster(data)
		if err != nil {
			return
		}
		if len(lines) > MaxRosterLines {
			t.Fatalf("%d lines", len(lines))
		}
		prev := 0
		for _, l := range lines {
			if l.Line <= prev {
				t.Fatalf("line numbers do not grow: %+v", lines)
			}
			prev = l.Line
			if l.Problem != "" {
				continue
			}
			if mac, err := NormalizeMAC(l.MAC); err != nil || mac != l.MAC {
				t.Fatalf("line without a problem has MAC %q", l.MAC)
			}
			if validateWord("", l.Name) != nil || l.Group != "" && validateWord("", l.Group) != nil {
				t.Fatalf("line without a problem has name %q, group %q", l.Name, l.Group)
			}
		}
	})
}

func importLines(t *testing.T, file string) []RosterLine {
	t.Helper()
	lines, err := ParseRoster([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func outcomes(rep ImportReport) string {
	var s []string
	for _, l := range rep.Lines {
		o := l.Outcome
		if len(l.Changes) > 0 {
			o += "(" + strings.Join(l.Changes, "; ") + ")"
		}
		if l.Reason != "" {
			o += "(" + l.Reason + ")"
		}
		s = append(s, o)
	}
	return strings.Join(s, " ")
}

func TestImport(t *testing.T) { forEachBackend(t, testImport) }

func testImport(t *testing.T) {
	ctx := context.Background()
	inv := roomInv(t) // pc1, pc2 in room1, pc1 in row1, pc3 in no group
	if err := inv.Seen(ctx, "52:54:00:00:00:05", "10.0.0.5", time.Now()); err != nil {
		t.Fatal(err)
	}
	// One bad line: nothing changes, and the report says what each line would have done.
	bad := "mac,name,group\n" +
		"52:54:00:00:00:01,pc1,room1\n" + // unchanged
		"52:54:00:00:00:02,pc3,room2\n" + // pc2 -> pc3 (pc3 renamed below), into new room2
		"52:54:00:00:00:03,pc2,\n" + // pc3 -> pc2: a swap
		"52:54:00:00:00:05,pc5,room2\n" + // seen: added
		"52:54:00:00:00:06,pc6\n" + // unknown: added
		"52:54:00:00:00:06,pc7\n" + // duplicate MAC
		"52:54:00:00:00:07,pc6\n" + // duplicate name
		"zz,pc8\n"
	rep, err := inv.Import(ctx, importLines(t, bad), false)
	want := "unchanged changed(name pc2 -> pc3; group +room2) changed(name pc3 -> pc2) added added " +
		"refused(MAC 52:54:00:00:00:06 is also on line 6) refused(name pc6 is also on line 6) " +
		`refused("zz" is not a MAC address like aa:bb:cc:dd:ee:ff)`
	if err != nil || rep.Applied || outcomes(rep) != want || rep.Refused() != 3 || !slices.Equal(rep.CreatedGroups, []string{"room2"}) {
		t.Fatalf("import with bad lines: %+v, %v\ngot  %s\nwant %s", rep, err, outcomes(rep), want)
	}
	if rep.Lines[6].Line != 8 {
		t.Fatalf("line numbers count the header: %+v", rep.Lines[6])
	}
	if term, _ := inv.Terminal(ctx, "pc2"); term.MAC != "52:54:00:00:00:02" {
		t.Fatalf("a refused import changed pc2: %+v", term)
	}

	// The good lines alone: a dry run reports and changes nothing, then the import applies.
	good := strings.Join(strings.Split(bad, "\n")[:6], "\n")
	rep, err = inv.Import(ctx, importLines(t, good), true)
	if err != nil || rep.Applied || outcomes(rep) != "unchanged changed(name pc2 -> pc3; group +room2) changed(name pc3 -> pc2) added added" {
		t.Fatalf("dry run: %s, %v", outcomes(rep), err)
	}
	if gs, _ := inv.Groups(ctx); slices.Contains(gs, "room2") {
		t.Fatal("a dry run created room2")
	}
	rep, err = inv.Import(ctx, importLines(t, good), false)
	if err != nil || !rep.Applied {
		t.Fatalf("import: %s, %v", outcomes(rep), err)
	}
	for name, mac := range map[string]string{"pc1": "52:54:00:00:00:01", "pc3": "52:54:00:00:00:02", "pc2": "52:54:00:00:00:03", "pc5": "52:54:00:00:00:05", "pc6": "52:54:00:00:00:06"} {
		if term, err := inv.Terminal(ctx, name); err != nil || term.MAC != mac || !term.Enrolled {
			t.Errorf("%s after the import: %+v, %v", name, term, err)
		}
	}
	if got := members(t, inv, "room2"); !slices.Equal(got, []string{"pc3", "pc5"}) {
		t.Fatalf("room2: %v", got)
	}
	if got := members(t, inv, "room1"); !slices.Equal(got, []string{"pc1", "pc3"}) {
		t.Fatalf("room1 keeps its members (an import adds to groups): %v", got)
	}
	// Again: all unchanged.
	rep, err = inv.Import(ctx, importLines(t, good), false)
	if err != nil || outcomes(rep) != "unchanged unchanged unchanged unchanged unchanged" {
		t.Fatalf("import again: %s, %v", outcomes(rep), err)
	}
	// A name another terminal keeps is refused, naming it.
	rep, err = inv.Import(ctx, importLines(t, "52:54:00:00:00:09,pc1\n"), false)
	if err != nil || outcomes(rep) != "refused(name pc1 is taken by terminal 52:54:00:00:00:01)" {
		t.Fatalf("a taken name: %s, %v", outcomes(rep), err)
	}
	if _, err := inv.Import(ctx, importLines(t, "mac,name\n"), false); err == nil || !strings.Contains(err.Error(), "lists no terminals") {
		t.Fatalf("an empty file: %v", err)
	}
}
