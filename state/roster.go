package state

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// A roster is a CSV file of a region's terminals, one a line: MAC,name,group (the group may be
// empty or left out). A first line whose first field starts with "mac" is a header; lines
// starting with # are comments. MACs may be written in any common notation (aa:bb:cc:dd:ee:ff,
// AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff, aabbccddeeff).

// Bounds of a roster: an admin's file, but it crosses the network to the region.
const (
	MaxRosterBytes = 256 << 10
	MaxRosterLines = 4096
)

// RosterLine is one terminal line of a roster. Problem, if not empty, says why the line cannot
// be imported (a bad MAC, a bad name, a wrong number of fields).
type RosterLine struct {
	Line    int // 1-based line number in the file
	MAC     string
	Name    string
	Group   string
	Problem string
}

// ParseRoster parses a roster. Errors are for the file as a whole (too big, not CSV); a line
// that is CSV but not a terminal carries its Problem.
func ParseRoster(data []byte) ([]RosterLine, error) {
	if len(data) > MaxRosterBytes {
		return nil, invalid(fmt.Errorf("the file has %d bytes; at most %d are accepted (split it)", len(data), MaxRosterBytes))
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // spreadsheets write a byte order mark
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.Comment = '#'
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	var out []RosterLine
	for first := true; ; first = false {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, invalid(fmt.Errorf("line %d is not CSV: %w", pe.Line, pe.Err))
			}
			return nil, err
		}
		line, _ := r.FieldPos(0)
		if first && strings.HasPrefix(strings.ToLower(strings.TrimSpace(rec[0])), "mac") {
			continue
		}
		if len(out) == MaxRosterLines {
			return nil, invalid(fmt.Errorf("the file has more than %d terminal lines (split it)", MaxRosterLines))
		}
		out = append(out, parseRosterLine(line, rec))
	}
	return out, nil
}

func parseRosterLine(line int, rec []string) RosterLine {
	l := RosterLine{Line: line}
	if len(rec) < 2 || len(rec) > 3 {
		l.Problem = fmt.Sprintf("%d field(s); want MAC,name,group (the group may be empty)", len(rec))
		return l
	}
	for i := range rec {
		rec[i] = strings.TrimSpace(rec[i])
	}
	l.Name = rec[1]
	if len(rec) == 3 {
		l.Group = rec[2]
	}
	mac, err := parseAnyMAC(rec[0])
	switch {
	case err != nil:
		l.MAC = clipField(rec[0])
		l.Problem = err.Error()
	case validateWord("terminal name", l.Name) != nil:
		l.MAC, l.Name = mac, clipField(l.Name)
		l.Problem = validateWord("terminal name", rec[1]).Error()
	case l.Group != "" && validateWord("group name", l.Group) != nil:
		l.MAC, l.Group = mac, clipField(l.Group)
		l.Problem = validateWord("group name", rec[2]).Error()
	default:
		l.MAC = mac
	}
	return l
}

// clipField keeps a bad field short enough to show in a report.
func clipField(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// parseAnyMAC is NormalizeMAC that also takes twelve bare hex digits, as some inventories and
// switch exports write MACs. (Names, not MACs, may be twelve hex digits elsewhere: only a
// roster's MAC column reads them as a MAC.)
func parseAnyMAC(s string) (string, error) {
	if len(s) == 12 && strings.Trim(strings.ToLower(s), "0123456789abcdef") == "" {
		s = s[0:2] + ":" + s[2:4] + ":" + s[4:6] + ":" + s[6:8] + ":" + s[8:10] + ":" + s[10:12]
	}
	return NormalizeMAC(clipField(s))
}

// Import outcomes of a roster line.
const (
	ImportAdded     = "added"     // enrolled (it was unknown, or only seen)
	ImportChanged   = "changed"   // enrolled already; its name or groups change
	ImportUnchanged = "unchanged" // enrolled already as the line says
	ImportRefused   = "refused"   // the line cannot be imported; Reason says why
)

// ImportLine is what an import does (or would do) with one roster line.
type ImportLine struct {
	RosterLine
	Outcome string
	Changes []string // changed: what, as "name pc1 -> pc2", "group +room3"
	Reason  string   // refused: why
}

// ImportReport is what an import did or would do.
type ImportReport struct {
	Lines         []ImportLine
	CreatedGroups []string // groups the roster names that did not exist
	Applied       bool     // false: a dry run, or some line was refused and nothing changed
}

// Refused counts the refused lines.
func (r ImportReport) Refused() int {
	n := 0
	for _, l := range r.Lines {
		if l.Outcome == ImportRefused {
			n++
		}
	}
	return n
}

// Import enrolls the terminals of a roster: each line's MAC is enrolled under its name and, if
// the line names a group, made a member of that group (created if missing; other memberships
// stay). It is all or nothing: if any line is refused (a bad MAC or name, a MAC or name the
// file has twice, a name another terminal keeps), nothing changes, and the report says what
// each line would do. Names are checked against the inventory as the file leaves it, so a file
// may swap two terminals' names. With dryRun nothing changes either.
func (inv *Inventory) Import(ctx context.Context, lines []RosterLine, dryRun bool) (ImportReport, error) {
	var rep ImportReport
	if len(lines) == 0 {
		return rep, invalid(errors.New("the file lists no terminals"))
	}
	if len(lines) > MaxRosterLines {
		return rep, invalid(fmt.Errorf("the file has %d terminal lines; at most %d are accepted (split it)", len(lines), MaxRosterLines))
	}
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return rep, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return rep, err
	}
	current, err := inv.terminalsIn(ctx, tx)
	if err != nil {
		return rep, err
	}
	members, err := memberships(ctx, tx)
	if err != nil {
		return rep, err
	}
	gs, err := groupNames(ctx, tx)
	if err != nil {
		return rep, err
	}
	groups := map[string]bool{}
	for _, g := range gs {
		groups[g] = true
	}

	// Who is named what once the file is applied: the file's MACs (valid lines) take the
	// file's names; every other terminal keeps its own.
	macLine, nameLine := map[string]int{}, map[string]int{}
	for _, l := range lines {
		if l.Problem != "" {
			continue
		}
		if _, dup := macLine[l.MAC]; !dup {
			macLine[l.MAC] = l.Line
		}
		if _, dup := nameLine[l.Name]; !dup {
			nameLine[l.Name] = l.Line
		}
	}
	holder := map[string]string{} // name -> MAC of a terminal the file leaves as it is
	for mac, t := range current {
		if _, inFile := macLine[mac]; !inFile && t.Name != "" {
			holder[t.Name] = mac
		}
	}

	for _, l := range lines {
		il := ImportLine{RosterLine: l}
		t, known := current[l.MAC]
		switch {
		case l.Problem != "":
			il.Reason = l.Problem
		case macLine[l.MAC] != l.Line:
			il.Reason = fmt.Sprintf("MAC %s is also on line %d", l.MAC, macLine[l.MAC])
		case nameLine[l.Name] != l.Line:
			il.Reason = fmt.Sprintf("name %s is also on line %d", l.Name, nameLine[l.Name])
		case holder[l.Name] != "":
			il.Reason = fmt.Sprintf("name %s is taken by terminal %s", l.Name, holder[l.Name])
		case !known || !t.Enrolled:
			il.Outcome = ImportAdded
		default:
			if t.Name != l.Name {
				il.Changes = append(il.Changes, fmt.Sprintf("name %s -> %s", t.Name, l.Name))
			}
			if l.Group != "" && !slices.Contains(members[l.MAC], l.Group) {
				il.Changes = append(il.Changes, "group +"+l.Group)
			}
			il.Outcome = ImportUnchanged
			if len(il.Changes) > 0 {
				il.Outcome = ImportChanged
			}
		}
		if il.Reason != "" {
			il.Outcome = ImportRefused
		}
		if il.Outcome != ImportRefused && l.Group != "" && !groups[l.Group] {
			groups[l.Group] = true
			rep.CreatedGroups = append(rep.CreatedGroups, l.Group)
		}
		rep.Lines = append(rep.Lines, il)
	}
	if dryRun || rep.Refused() > 0 {
		return rep, nil
	}

	// Names first let go, then taken: a swap never meets itself half done.
	for _, l := range rep.Lines {
		if l.Outcome == ImportChanged && current[l.MAC].Name != l.Name {
			if _, err := tx.ExecContext(ctx, `UPDATE terminals SET name = NULL WHERE mac = ?`, l.MAC); err != nil {
				return rep, err
			}
		}
	}
	for _, g := range rep.CreatedGroups {
		if _, err := tx.ExecContext(ctx, `INSERT INTO groups (name) VALUES (?)`, g); err != nil {
			return rep, err
		}
	}
	for _, l := range rep.Lines {
		if l.Outcome == ImportUnchanged {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO terminals (mac, name, enrolled) VALUES (?, ?, 1)
			ON CONFLICT (mac) DO UPDATE SET name = excluded.name, enrolled = 1`, l.MAC, l.Name); err != nil {
			if isUnique(err) {
				return rep, conflict(fmt.Errorf("line %d: terminal name %q is taken", l.Line, l.Name))
			}
			return rep, err
		}
		if l.Group != "" {
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO group_members (grp, mac) VALUES (?, ?)`, l.Group, l.MAC); err != nil {
				return rep, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return rep, err
	}
	rep.Applied = true
	return rep, nil
}

// terminalsIn reads every terminal, by MAC.
func (inv *Inventory) terminalsIn(ctx context.Context, q rowsQuerier) (map[string]Terminal, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+terminalCols+` FROM terminals`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]Terminal{}
	for rows.Next() {
		t, err := scanTerminal(rows)
		if err != nil {
			return nil, err
		}
		out[t.MAC] = t
	}
	return out, rows.Err()
}

// memberships maps each MAC to the groups it is in.
func memberships(ctx context.Context, q rowsQuerier) (map[string][]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT mac, grp FROM group_members`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var mac, g string
		if err := rows.Scan(&mac, &g); err != nil {
			return nil, err
		}
		out[mac] = append(out[mac], g)
	}
	return out, rows.Err()
}

func groupNames(ctx context.Context, q rowsQuerier) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM groups ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
