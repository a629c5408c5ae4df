package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"golang.org/x/term"

	"tms/activities"
	"tms/workflows"
)

// `tms status` reads what central's service workflow keeps (each region's last report, a
// query: no workflow, no history), who polls each region's task queue, and counts of tasks from
// Temporal's visibility store; `--region R` asks the region itself (a "read" update on its
// service workflow) for its groups and terminals.

// missedReports is how many report intervals a region may miss before status calls it offline.
const missedReports = 3

// pollerWindow is how recently a worker must have polled a region's task queue for the region
// to count as online: workers long-poll for about a minute at a time.
const pollerWindow = 2 * time.Minute

// regionStatusRow is one line of `tms status`.
type regionStatusRow struct {
	Region string `json:"region"`
	Online bool   `json:"online"`
	// Why says why a region is offline.
	Why     string `json:"why,omitempty"`
	Version string `json:"version,omitempty"`
	BootEnv string `json:"bootenv,omitempty"`
	// BootEnvRollout is a rollout in progress that includes the region: VERSION and the
	// region's phase in it.
	BootEnvRollout  string     `json:"bootenv_rollout,omitempty"`
	Used            int64      `json:"store_used"`
	Capacity        int64      `json:"store_capacity"`
	HighWater       float64    `json:"store_high_water,omitempty"`
	Images          int        `json:"store_images"`
	Terminals       int        `json:"terminals"`
	TerminalsOnline int        `json:"terminals_online"`
	TerminalsBusy   int        `json:"terminals_busy"`
	RunningTasks    int64      `json:"running_tasks"`
	FailedTasks24h  int64      `json:"failed_tasks_24h"`
	LastReport      *time.Time `json:"last_report,omitempty"`
	// Servers are the region's servers (a region may run several), from its report.
	Servers []serverRow `json:"servers"`
}

// regionDetail is `tms status --region R`.
type regionDetail struct {
	regionStatusRow
	Groups       []groupStatusRow    `json:"groups"`
	TerminalList []terminalStatusRow `json:"terminal_list"`
}

type groupStatusRow struct {
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels,omitempty"`
	Target   string            `json:"target,omitempty"`
	Members  int               `json:"members"`
	Online   int               `json:"online"`
	OnTarget int               `json:"on_target"`
	Busy     int               `json:"busy"`
}

type terminalStatusRow struct {
	Name        string     `json:"name"`
	Groups      []string   `json:"groups"`
	Online      bool       `json:"online"`
	Version     string     `json:"version,omitempty"`
	VersionNote string     `json:"version_note,omitempty"`
	Target      string     `json:"target,omitempty"`
	OnTarget    bool       `json:"on_target"`
	LastSeen    *time.Time `json:"last_seen,omitempty"`
	Task        string     `json:"task,omitempty"`
}

func (a *App) statusCommand() *cobra.Command {
	var region string
	var asJSON, watch bool
	var every time.Duration
	c := &cobra.Command{
		Use:   "status [--region R] [--json] [--watch]",
		Short: "Show every region at a glance, or one region's groups and terminals",
		Long: `Show every region at a glance: online (its worker polls its task queue and it reported to
central within ` + fmt.Sprint(missedReports) + ` report intervals), the tms version it runs, its store's used and
capacity, its terminals (total, online, in a task), its running tasks and the tasks that failed in
the last 24 hours.

With --region R, the region's groups (target version: what the group's latest deploy or update
wrote; how many members are online, on target, in a task) and terminals (online: its agent or the
in-memory OS reported within ` + roundDuration(activities.TerminalOnlineWindow) + `; the version its disk holds and whether that is
its group's target; last seen; current task).

--watch redraws every --every (default 2s) until Ctrl-C; --json prints once for scripts.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch && asJSON {
				return usageError{fmt.Errorf("--watch and --json do not go together: --json prints once, for scripts")}
			}
			if every < 500*time.Millisecond {
				return usageError{fmt.Errorf("--every %s: want at least 500ms", every)}
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			draw := func() error {
				var buf bytes.Buffer
				if err := a.status(ctx, c, &buf, region, asJSON); err != nil {
					return err
				}
				_, err := a.Stdout.Write(buf.Bytes())
				return err
			}
			if !watch {
				return draw()
			}
			return a.watch(ctx, every, func(w io.Writer) error { return a.status(ctx, c, w, region, false) })
		},
	}
	c.Flags().StringVar(&region, "region", "", "show this region's groups and terminals")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&watch, "watch", false, "redraw until interrupted")
	c.Flags().DurationVar(&every, "every", 2*time.Second, "how often --watch redraws")
	return c
}

// watch draws frame every interval until ctx ends: in place on a terminal, one frame after
// another (separated by a blank line) elsewhere. A frame that fails shows its error and the
// watch goes on: a region or central that is away comes back.
func (a *App) watch(ctx context.Context, every time.Duration, frame func(io.Writer) error) error {
	f, ok := a.Stdout.(*os.File)
	inPlace := ok && term.IsTerminal(int(f.Fd()))
	t := time.NewTicker(every)
	defer t.Stop()
	for first := true; ; first = false {
		var buf bytes.Buffer
		if inPlace {
			buf.WriteString("\x1b[H\x1b[2J") // home, clear the screen
		} else if !first {
			buf.WriteString("\n")
		}
		fmt.Fprintf(&buf, "%s  (every %s; Ctrl-C stops)\n\n", a.now().Format(time.DateTime), roundDuration(every))
		if err := frame(&buf); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(&buf, "error: %v\n", err)
		}
		if _, err := a.Stdout.Write(buf.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// status writes one status frame to w.
func (a *App) status(ctx context.Context, c *tclient, w io.Writer, region string, asJSON bool) error {
	rows, err := a.regionStatuses(ctx, c, region)
	if err != nil {
		return err
	}
	if region == "" {
		if asJSON {
			return writeJSON(w, rows)
		}
		if err := writeRegionStatuses(w, rows, a.now()); err != nil {
			return err
		}
		// Plans whose readiness check found regions not ready ('tms plan ls' lists them all).
		var st workflows.CentralStatus
		if v, err := c.QueryWorkflow(ctx, workflows.CentralServiceID, "", workflows.QueryStatus); err == nil && v.Get(&st) == nil {
			for _, l := range plansNotReady(st.Plans) {
				fmt.Fprintln(w, l)
			}
		}
		return nil
	}
	i := slices.IndexFunc(rows, func(r regionStatusRow) bool { return r.Region == region })
	if i < 0 {
		return c.checkRegion(ctx, region) // says which regions there are
	}
	d := regionDetail{regionStatusRow: rows[i], Groups: []groupStatusRow{}, TerminalList: []terminalStatusRow{}}
	var note string
	if d.Online {
		res, err := c.regionAdmin(ctx, region, activities.AdminInput{Op: activities.OpStatus})
		if err != nil {
			return err
		}
		d.fill(res.Status)
	} else {
		note = fmt.Sprintf("region %s is offline (%s): its groups and terminals cannot be asked; the line above is its last report", region, d.Why)
	}
	if asJSON {
		return writeJSON(w, d)
	}
	if err := writeRegionStatuses(w, []regionStatusRow{d.regionStatusRow}, a.now()); err != nil {
		return err
	}
	if note != "" {
		_, err := fmt.Fprintln(w, "\n"+note)
		return err
	}
	return writeRegionDetail(w, d, a.now())
}

func (d *regionDetail) fill(st activities.RegionStatus) {
	// The region's own answer is newer than its last report.
	sum := st.Summary
	d.Used, d.Capacity, d.Version = sum.Used, sum.Capacity, sum.Version
	d.HighWater, d.Images = sum.HighWater, max(sum.ImageCount, len(sum.Images))
	d.Terminals, d.TerminalsOnline, d.TerminalsBusy = sum.Terminals, sum.Online, sum.Busy
	if len(sum.Servers) > 0 {
		d.Servers = serverRows(sum.Servers, true)
	}
	for _, g := range st.Groups {
		d.Groups = append(d.Groups, groupStatusRow{Name: g.Name, Labels: g.Labels, Target: g.Target, Members: g.Members, Online: g.Online, OnTarget: g.OnTarget, Busy: g.Busy})
	}
	for _, t := range st.Terminals {
		row := terminalStatusRow{Name: t.Name, Groups: t.Groups, Online: t.Online, Version: t.Version, VersionNote: t.VersionNote,
			Target: t.Target, OnTarget: t.OnTarget, Task: t.Task}
		if row.Groups == nil {
			row.Groups = []string{}
		}
		if !t.LastSeen.IsZero() {
			ls := t.LastSeen
			row.LastSeen = &ls
		}
		d.TerminalList = append(d.TerminalList, row)
	}
}

// regionStatuses is one line per region central knows, or that reported; only region's when
// only is set.
func (a *App) regionStatuses(ctx context.Context, c *tclient, only string) ([]regionStatusRow, error) {
	res, err := c.centralAdmin(ctx, "regions")
	if err != nil {
		return nil, err
	}
	var st workflows.CentralStatus
	v, err := c.QueryWorkflow(ctx, workflows.CentralServiceID, "", workflows.QueryStatus)
	if err != nil {
		return nil, fmt.Errorf("cannot ask central for the regions' reports: %w", err)
	}
	if err := v.Get(&st); err != nil {
		return nil, err
	}
	reports := map[string]activities.RegionSummary{}
	for _, r := range st.Reports {
		reports[r.Region] = r
	}
	ids := []string{}
	for _, r := range res.Regions {
		ids = append(ids, r.ID)
	}
	for id := range reports {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if only != "" {
		ids = slices.DeleteFunc(ids, func(id string) bool { return id != only })
	}
	now := a.now()
	rows := []regionStatusRow{}
	for _, id := range ids {
		row := regionStatusRow{Region: id}
		rep, reported := reports[id]
		if reported {
			row.Version, row.Used, row.Capacity, row.BootEnv = rep.Version, rep.Used, rep.Capacity, rep.BootEnv
			row.HighWater, row.Images = rep.HighWater, max(rep.ImageCount, len(rep.Images))
			row.Terminals, row.TerminalsOnline, row.TerminalsBusy = rep.Terminals, rep.Online, rep.Busy
			at := rep.Received
			row.LastReport = &at
		}
		row.Online, row.Why, err = a.regionOnline(ctx, c, id, rep, reported, now)
		if err != nil {
			return nil, err
		}
		row.Servers = serverRows(rep.Servers, row.Online)
		if row.RunningTasks, err = c.countTasks(ctx, id, "ExecutionStatus = 'Running'"); err != nil {
			return nil, err
		}
		since := now.Add(-24 * time.Hour).UTC().Format(time.RFC3339)
		if row.FailedTasks24h, err = c.countTasks(ctx, id, "ExecutionStatus = 'Failed' AND CloseTime > '"+since+"'"); err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	for _, ro := range a.bootEnvRollouts(ctx, c) {
		for _, rr := range ro.Regions {
			if i := slices.IndexFunc(rows, func(r regionStatusRow) bool { return r.Region == rr.Region }); i >= 0 {
				rows[i].BootEnvRollout = shortID(ro.Version) + " " + rolloutPhaseText(rr)
			}
		}
	}
	return rows, nil
}

// bootEnvRollouts returns the progress of the bootenv rollouts under way; one that cannot be
// asked is left out (status shows what it can).
func (a *App) bootEnvRollouts(ctx context.Context, c *tclient) []workflows.BootEnvRolloutResult {
	q := "WorkflowType = '" + workflows.NameBootEnvRollout + "' AND ExecutionStatus = 'Running'"
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: c.cfg.Namespace, Query: q, PageSize: 20})
	if err != nil {
		a.log.Debug("cannot list bootenv rollouts", "err", err)
		return nil
	}
	var out []workflows.BootEnvRolloutResult
	for _, e := range resp.GetExecutions() {
		v, err := c.QueryWorkflow(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId(), workflows.QueryProgress)
		var p workflows.BootEnvRolloutResult
		if err != nil || v.Get(&p) != nil {
			continue
		}
		out = append(out, p)
	}
	return out
}

// rolloutPhaseText is a region's part of a rollout, for people.
func rolloutPhaseText(rr workflows.RolloutRegion) string {
	switch {
	case rr.Canary != "" && rr.Phase == workflows.RolloutProbing:
		return "probing (canary " + rr.Canary + ")"
	case rr.Error != "":
		return rr.Phase + ": " + rr.Error
	}
	return rr.Phase
}

func shortID(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}

// regionOnline decides whether a region is online: it reported within missedReports intervals
// and a worker polls its task queue.
func (a *App) regionOnline(ctx context.Context, c *tclient, id string, rep activities.RegionSummary, reported bool, now time.Time) (bool, string, error) {
	if !reported {
		return false, "it has never reported", nil
	}
	interval := rep.Interval
	if interval <= 0 {
		interval = workflows.DefaultReportInterval
	}
	if late := now.Sub(rep.Received); late > missedReports*interval {
		return false, fmt.Sprintf("no report for %s", roundDuration(late.Round(time.Second))), nil
	}
	q, err := c.DescribeTaskQueue(ctx, activities.RegionQueue(id), enumspb.TASK_QUEUE_TYPE_WORKFLOW)
	if err != nil {
		return false, "", fmt.Errorf("cannot ask Temporal who polls region %s's task queue: %w", id, err)
	}
	for _, p := range q.GetPollers() {
		if now.Sub(p.GetLastAccessTime().AsTime()) <= pollerWindow {
			return true, "", nil
		}
	}
	return false, "no worker polls its task queue", nil
}

// countTasks counts region's tasks (not their per-terminal parts) matching cond.
func (c *tclient) countTasks(ctx context.Context, region, cond string) (int64, error) {
	q, err := quote(region)
	if err != nil {
		return 0, err
	}
	query := workflows.AttrRegion.GetName() + " = " + q + " AND " + workflows.AttrKind.GetName() + " IS NOT NULL AND ParentWorkflowId IS NULL AND " + cond
	res, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: c.cfg.Namespace, Query: query})
	if err != nil {
		return 0, fmt.Errorf("cannot count region %s's tasks: %w", region, err)
	}
	return res.GetCount(), nil
}

func writeRegionStatuses(w io.Writer, rows []regionStatusRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tSTATE\tVERSION\tBOOTENV\tSTORE USED / CAPACITY\tIMAGES\tTERMINALS\tONLINE\tIN A TASK\tRUNNING TASKS\tFAILED 24H\tLAST REPORT")
	var why []string
	for _, r := range rows {
		state := "online"
		if !r.Online {
			state = "OFFLINE"
			why = append(why, fmt.Sprintf("%s: offline: %s", r.Region, r.Why))
		}
		last := "never"
		if r.LastReport != nil {
			last = agoText(now, *r.LastReport)
		}
		if r.BootEnvRollout != "" {
			why = append(why, fmt.Sprintf("%s: bootenv rollout %s", r.Region, r.BootEnvRollout))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", r.Region, state, dash(r.Version), dash(shortID(r.BootEnv)), storeText(r.Used, r.Capacity, r.HighWater),
			r.Images, r.Terminals, r.TerminalsOnline, r.TerminalsBusy, r.RunningTasks, r.FailedTasks24h, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range why {
		fmt.Fprintln(w, l)
	}
	servers := map[string][]serverRow{}
	for _, r := range rows {
		servers[r.Region] = r.Servers
	}
	return writeServers(w, servers, now)
}

// serverRow is one of a region's servers in `tms status` and `tms region ls`.
type serverRow struct {
	ID       string            `json:"id"`
	State    string            `json:"state"` // healthy or stale
	Labels   map[string]string `json:"labels"`
	Endpoint string            `json:"endpoint"`
	DHCP     string            `json:"dhcp,omitempty"`
	Version  string            `json:"version"`
	BootEnv  string            `json:"bootenv"`
	LastSeen time.Time         `json:"last_seen"`
	Healthy  bool              `json:"healthy"`
}

// serverRows are a region's servers as its report lists them; heard says whether the region
// itself is heard from (online): if not, none of its servers counts as healthy.
func serverRows(ss []activities.ServerStatus, heard bool) []serverRow {
	out := []serverRow{}
	for _, s := range ss {
		row := serverRow{ID: s.ID, Labels: s.Labels, Endpoint: s.Endpoint, DHCP: s.DHCP, Version: s.Version, BootEnv: s.BootEnv,
			LastSeen: s.LastSeen, Healthy: s.Healthy && heard, State: "healthy"}
		if row.Labels == nil {
			row.Labels = map[string]string{}
		}
		if !row.Healthy {
			row.State = "stale"
		}
		out = append(out, row)
	}
	return out
}

// writeServers lists the regions' servers, by region, if any region reports some.
func writeServers(w io.Writer, byRegion map[string][]serverRow, now time.Time) error {
	ids := slices.Sorted(maps.Keys(byRegion))
	if !slices.ContainsFunc(ids, func(id string) bool { return len(byRegion[id]) > 0 }) {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tSERVER\tSTATE\tVERSION\tBOOTENV\tLABELS\tENDPOINT\tLAST SEEN")
	for _, id := range ids {
		for _, s := range byRegion[id] {
			state := s.State
			if !s.Healthy {
				state = "STALE"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, s.ID, state, dash(s.Version), dash(shortID(s.BootEnv)), dash(labels(s.Labels)),
				dash(s.Endpoint), agoText(now, s.LastSeen))
		}
	}
	return tw.Flush()
}

func writeRegionDetail(w io.Writer, d regionDetail, now time.Time) error {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tLABELS\tTARGET\tMEMBERS\tONLINE\tON TARGET\tIN A TASK")
	for _, g := range d.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", g.Name, dash(labels(g.Labels)), dash(short(g.Target)), g.Members, g.Online, g.OnTarget, g.Busy)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TERMINAL\tGROUPS\tSTATE\tVERSION\tON TARGET\tLAST SEEN\tTASK")
	for _, t := range d.TerminalList {
		state, seen, on := "offline", "never", "-"
		if t.Online {
			state = "online"
		}
		if t.LastSeen != nil {
			seen = agoText(now, *t.LastSeen)
		}
		if t.Target != "" {
			on = "no"
			if t.OnTarget {
				on = "yes"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, dash(strings.Join(t.Groups, ",")), state, dash(short(t.Version)), on, seen, dash(t.Task))
	}
	return tw.Flush()
}

// storeText says how full a store is: "5.0 MiB / 1.0 GiB (1%)", with "ABOVE HIGH WATER"
// when it is.
func storeText(used, capacity int64, high float64) string {
	if used == 0 && capacity == 0 {
		return "-"
	}
	if capacity <= 0 {
		return humanBytes(used) + " / ?"
	}
	t := fmt.Sprintf("%s / %s (%.0f%%)", humanBytes(used), humanBytes(capacity), 100*float64(used)/float64(capacity))
	if high > 0 && float64(used) > high*float64(capacity) {
		t += " ABOVE HIGH WATER"
	}
	return t
}

// agoText says how long before now t was, to the second.
func agoText(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return roundDuration(d) + " ago"
}

func writeJSON(w io.Writer, v any) error { return jsonEncoder(w).Encode(v) }
