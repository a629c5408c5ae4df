package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/temporalio/sqlparser"
)

var queryNow = time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)

func TestTaskQueryNamesEachFilter(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    taskFilter
		want []string
	}{
		{"default: unfinished top-level tasks", taskFilter{}, []string{"TmsKind IS NOT NULL", "ParentWorkflowId IS NULL", "ExecutionStatus = 'Running'"}},
		{"all", taskFilter{All: true}, []string{"TmsKind IS NOT NULL AND ParentWorkflowId IS NULL"}},
		{"region", taskFilter{Region: "region-b"}, []string{"TmsRegion = 'region-b'"}},
		{"kind", taskFilter{Kind: "power-on"}, []string{"TmsKind = 'power-on'"}},
		{"group", taskFilter{Group: "room1"}, []string{"TmsGroup = 'room1'"}},
		{"terminal by name", taskFilter{Terminal: "pc1"}, []string{"TmsTerminals = 'pc1'"}},
		{"terminal by MAC", taskFilter{Terminal: "52-54-00-AA-00-01"}, []string{"TmsTerminals = '52:54:00:aa:00:01'"}},
		{"started by a user", taskFilter{By: "alice"}, []string{"TmsStartedBy = 'alice'"}},
		{"started by a schedule", taskFilter{By: "schedule:nightly"}, []string{"TmsStartedBy = 'schedule:nightly'"}},
		{"failed", taskFilter{State: "failed"}, []string{"ExecutionStatus = 'Failed'"}},
		{"timed out", taskFilter{State: "timed-out"}, []string{"ExecutionStatus = 'TimedOut'"}},
		{"waiting", taskFilter{State: "waiting"}, []string{"ExecutionStatus = 'Running'", "TmsStartAt > '2026-12-02T07:00:00Z'"}},
		{"children", taskFilter{Children: true, All: true}, []string{"TmsKind IS NOT NULL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := tc.f.query(queryNow)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(q, w) {
					t.Errorf("query %q lacks %q", q, w)
				}
			}
			if tc.f.State != "" && strings.Count(q, "ExecutionStatus") != 1 {
				t.Errorf("query %q names the status more than once", q)
			}
			if tc.f.All && strings.Contains(q, "ExecutionStatus") {
				t.Errorf("--all query %q filters by status", q)
			}
			if tc.f.Children && strings.Contains(q, "ParentWorkflowId") {
				t.Errorf("query with children %q leaves them out", q)
			}
			checkQuery(t, q)
		})
	}
}

func TestTaskQueryRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    taskFilter
		want string
	}{
		{"unknown kind", taskFilter{Kind: "format"}, "kinds: capture, deploy, update, power-on, power-off, reboot, share"},
		{"unknown state", taskFilter{State: "Running"}, "states: waiting, running, completed, failed, canceled, terminated, timed-out"},
		{"quote in a region", taskFilter{Region: "a' OR 1=1"}, "region id"},
		{"quote in a group", taskFilter{Group: "room' OR TmsKind = 'x"}, "--group"},
		{"quote in a terminal", taskFilter{Terminal: "pc1'"}, "neither a terminal name nor a MAC"},
		{"backslash in a terminal", taskFilter{Terminal: `pc\`}, "neither a terminal name nor a MAC"},
		{"quote in a user", taskFilter{By: "alice' OR 1=1"}, "neither a user name nor schedule:NAME"},
		{"quote in a schedule", taskFilter{By: "schedule:x'"}, "neither a user name nor schedule:NAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := tc.f.query(queryNow)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("query = %q, %v; want an error with %q", q, err, tc.want)
			}
		})
	}
	for _, v := range []string{"", "a'b", `a\b`, "a\nb", strings.Repeat("a", maxQueryValue+1)} {
		if q, err := quote(v); err == nil {
			t.Errorf("quote(%q) = %q", v, q)
		}
	}
}

// checkQuery parses q as Temporal's visibility store does and checks that it is one WHERE
// clause of ANDed comparisons whose right sides are single literals or NULL: no value broke
// out of its quotes.
func checkQuery(t *testing.T, q string) {
	t.Helper()
	stmt, err := sqlparser.Parse("select * from t where " + q)
	if err != nil {
		t.Fatalf("query %q does not parse: %v", q, err)
	}
	sel, ok := stmt.(*sqlparser.Select)
	if !ok || sel.Where == nil {
		t.Fatalf("query %q is not a plain WHERE clause", q)
	}
	var walk func(e sqlparser.Expr)
	walk = func(e sqlparser.Expr) {
		switch e := e.(type) {
		case *sqlparser.AndExpr:
			walk(e.Left)
			walk(e.Right)
		case *sqlparser.ComparisonExpr:
			if _, ok := e.Left.(*sqlparser.ColName); !ok {
				t.Fatalf("query %q compares %s", q, sqlparser.String(e.Left))
			}
			if _, ok := e.Right.(*sqlparser.SQLVal); !ok {
				t.Fatalf("query %q compares with %s", q, sqlparser.String(e.Right))
			}
		case *sqlparser.IsExpr:
			if _, ok := e.Expr.(*sqlparser.ColName); !ok {
				t.Fatalf("query %q tests %s", q, sqlparser.String(e.Expr))
			}
		default:
			t.Fatalf("query %q holds %T: %s", q, e, sqlparser.String(e))
		}
	}
	walk(sel.Where.Expr)
}

func FuzzTaskQuery(f *testing.F) {
	f.Add("region-a", "deploy", "running", "room1", "pc1")
	f.Add("a' OR 1=1", "x", "waiting", "g\\", "52:54:00:00:00:01")
	f.Add("", "", "", "room-1_a.b", "pc'1")
	f.Fuzz(func(t *testing.T, region, kind, st, group, terminal string) {
		filter := taskFilter{Region: region, Kind: kind, State: st, Group: group, Terminal: terminal}
		q, err := filter.query(queryNow)
		if err != nil {
			return
		}
		checkQuery(t, q)
		// Each value given appears quoted whole.
		for _, v := range []string{region, kind, group} {
			if v != "" && !strings.Contains(q, "'"+v+"'") {
				t.Fatalf("query %q lacks '%s'", q, v)
			}
		}
	})
}
