package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/settings"
	"tms/workflows"
)

// tms region config show|set: a region's run-time settings, which central changes while the
// region runs. A change is a ConfigureRegion task: checked here first, then by the workflow and
// by the region, which stores and applies it; a region that is offline applies it when it comes
// back, and show lists it as pending until then.

func (a *App) regionConfigCommand() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Show and change a region's run-time settings (time zone, boot timeouts, DHCP limits…)"}
	c.AddCommand(a.regionConfigShow(), a.regionConfigSet())
	return c
}

// settingsHelp lists the settings for --help.
func settingsHelp() string {
	var b strings.Builder
	for _, s := range settings.All() {
		fmt.Fprintf(&b, "  %-26s %s (%s; default %s)\n", s.Key, s.Description, s.Bounds, defaultText(s.Key))
	}
	return b.String()
}

// defaultText is a setting's built-in default as people read it.
func defaultText(key string) string {
	if key == settings.KeyTimezone {
		return "the server's local zone"
	}
	return settings.Defaults().Get(key)
}

// configResult is what `tms region config set --json` prints.
type configResult struct {
	Task     string    `json:"task"`
	Region   string    `json:"region"`
	Key      string    `json:"key"`
	Value    string    `json:"value"`
	State    string    `json:"state"` // "applied", "pending" or "started" (--no-wait)
	Previous string    `json:"previous,omitempty"`
	At       time.Time `json:"at,omitzero"`
}

func (a *App) regionConfigSet() *cobra.Command {
	var noWait, asJSON bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "set REGION KEY VALUE [--no-wait] [--wait DURATION] [--json]",
		Short: "Change one of a region's run-time settings, without restarting the region",
		Long: `Set checks VALUE, then starts a task (kind config) that has the region check, store and apply
it: the region uses it at once and keeps it across restarts; central records it. A region
that does not answer within --wait applies the change when it comes back (within ` + roundDuration(workflows.DefaultOfflineWait) + `);
'tms region config show' lists it as pending until then. A new change of a key cancels the
region's pending changes of that key.

Settings:
` + settingsHelp(),
		Args: exactArgs(3, "REGION KEY VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			region, key := args[0], args[1]
			value, err := settings.Check(key, args[2])
			if err != nil {
				return fmt.Errorf("refused, nothing changed: %w", err)
			}
			ctx := cmd.Context()
			c, err := a.dialRegion(ctx, region)
			if err != nil {
				return err
			}
			defer c.Close()
			pending, err := c.pendingConfig(ctx, region)
			if err != nil {
				return err
			}
			for _, p := range pending {
				if p.Key != key {
					continue
				}
				if err := c.CancelWorkflow(ctx, p.Task, ""); err != nil {
					return fmt.Errorf("cannot cancel the pending change of %s to %s (task %s): %w", key, p.Value, p.Task, err)
				}
				fmt.Fprintf(a.Stderr, "canceled the pending change of %s to %s (task %s)\n", key, p.Value, p.Task)
			}
			by := c.user // the logged-in user, as every task records who started it
			id := workflows.Stamped(workflows.ConfigWorkflowID(region, key), a.now())
			tags := workflows.TaskTags{Region: region, Kind: workflows.TaskConfig, StartedBy: by}
			run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: id, TaskQueue: activities.CentralQueue, TypedSearchAttributes: tags.StartAttributes(),
				Memo:                                     map[string]any{workflows.ConfigMemoKey: key, workflows.ConfigMemoValue: value},
				WorkflowExecutionErrorWhenAlreadyStarted: true,
			}, workflows.ConfigureRegion, workflows.ConfigureRegionInput{Region: region, Key: key, Value: value, StartedBy: by})
			if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
				return fmt.Errorf("a change of %s in region %s is already running as task %s: try again in a second", key, region, id)
			}
			if err != nil {
				return fmt.Errorf("cannot start the change of %s in region %s: %w", key, region, err)
			}
			out := configResult{Task: id, Region: region, Key: key, Value: value, State: "started"}
			if noWait {
				if asJSON {
					return a.printJSON(out)
				}
				fmt.Fprintf(a.Stdout, "started the change of %s to %s in region %s: task %s\nfollow it with: tms task show %s\n", key, value, region, id, id)
				return nil
			}
			wctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			var res workflows.ConfigureRegionResult
			err = run.Get(wctx, &res)
			switch {
			case err == nil:
				out.State, out.Value, out.Previous, out.At = "applied", res.Value, res.Previous, res.At
				if asJSON {
					return a.printJSON(out)
				}
				fmt.Fprintf(a.Stdout, "region %s applied %s = %s (was %s) at %s: task %s\n", region, key, res.Value, dash(res.Previous),
					res.At.Local().Format(time.DateTime+" MST"), id)
				return nil
			case ctx.Err() != nil:
				return fmt.Errorf("stopped waiting for region %s; the change of %s goes on as task %s: %w", region, key, id, ctx.Err())
			case isWorkflowEnd(err):
				return fmt.Errorf("the change of %s in region %s failed (task %s): %s", key, region, id, rootMessage(err))
			default:
				// The wait ran out (the server may end the poll a moment before our deadline
				// does, with an error of its own): the task goes on.
				out.State = "pending"
				if asJSON {
					return a.printJSON(out)
				}
				fmt.Fprintf(a.Stdout, "region %s has not answered within %s: the change of %s to %s is pending and applies when the region returns (task %s)\n"+
					"'tms region config show %s' lists it\n", region, roundDuration(wait), key, value, id, region)
				return nil
			}
		},
	}
	c.Flags().BoolVar(&noWait, "no-wait", false, "start the change and return at once")
	c.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the region to apply the change before saying it is pending")
	c.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON")
	return c
}

// isWorkflowEnd reports whether err is a task's own end (failed, canceled, terminated, timed
// out) rather than a failure to wait for it.
func isWorkflowEnd(err error) bool {
	var we *temporal.WorkflowExecutionError
	return errors.As(err, &we)
}

// pendingChange is a ConfigureRegion task still running: a change the region has not applied.
type pendingChange struct {
	Key     string    `json:"key"`
	Value   string    `json:"value"`
	Task    string    `json:"task"`
	Started time.Time `json:"started"`
}

// pendingConfig lists region's running ConfigureRegion tasks, oldest first, from visibility
// and the key and value in their memos.
func (c *tclient) pendingConfig(ctx context.Context, region string) ([]pendingChange, error) {
	q := fmt.Sprintf("%s = '%s' AND %s = '%s' AND ExecutionStatus = 'Running'", workflows.AttrKind.GetName(), workflows.TaskConfig,
		workflows.AttrRegion.GetName(), strings.ReplaceAll(region, "'", ""))
	var out []pendingChange
	var token []byte
	for range 10 { // at most 1000: a region has a handful of settings
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: c.cfg.Namespace, Query: q, PageSize: 100, NextPageToken: token})
		if err != nil {
			return nil, fmt.Errorf("cannot list the pending changes of region %s: %w", region, err)
		}
		for _, e := range resp.Executions {
			out = append(out, pendingChange{Key: memoString(e.GetMemo(), workflows.ConfigMemoKey), Value: memoString(e.GetMemo(), workflows.ConfigMemoValue),
				Task: e.GetExecution().GetWorkflowId(), Started: e.GetStartTime().AsTime()})
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	// Visibility lists the newest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

func memoString(m *commonpb.Memo, field string) string {
	var s string
	if p, ok := m.GetFields()[field]; ok {
		_ = converter.GetDefaultDataConverter().FromPayload(p, &s) // a memo tms did not write shows as empty
	}
	return s
}

// settingRow is one setting as `tms region config show --json` prints it.
type settingRow struct {
	Key         string          `json:"key"`
	Value       string          `json:"value"` // empty: unknown (the region did not answer, central has no record)
	Source      string          `json:"source"`
	By          string          `json:"by,omitempty"`
	At          time.Time       `json:"at,omitzero"`
	Task        string          `json:"task,omitempty"`
	Base        string          `json:"base,omitempty"` // the configuration file's value or the default
	Default     string          `json:"default"`
	Bounds      string          `json:"bounds"`
	Description string          `json:"description"`
	Pending     []pendingChange `json:"pending"`
}

// regionConfig is what `tms region config show --json` prints.
type regionConfig struct {
	Region string `json:"region"`
	// Online: the region answered; otherwise the values are central's record of what it last
	// applied, and Error says why the region did not answer.
	Online   bool         `json:"online"`
	Error    string       `json:"error,omitempty"`
	Settings []settingRow `json:"settings"`
}

func (a *App) regionConfigShow() *cobra.Command {
	var asJSON bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "show REGION [--json] [--wait DURATION]",
		Short: "Show a region's run-time settings: effective value, where it comes from, pending changes",
		Long: `Show asks the region for each setting's effective value and where it comes from (the default,
the region's configuration file, or a change pushed by whom and when), and lists the changes
that are pending (the region has not applied them yet). A region that does not answer within
--wait is shown as offline, with central's record of the values it last applied.

Settings:
` + settingsHelp(),
		Args: exactArgs(1, "REGION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			region := args[0]
			ctx := cmd.Context()
			c, err := a.dialRegion(ctx, region)
			if err != nil {
				return err
			}
			defer c.Close()
			pending, err := c.pendingConfig(ctx, region)
			if err != nil {
				return err
			}
			out := regionConfig{Region: region, Online: true, Settings: []settingRow{}}
			have := map[string]activities.SettingInfo{}
			if a.temporal.adminTimeout <= 0 || a.temporal.adminTimeout > wait {
				a.temporal.adminTimeout = wait
			}
			res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpSettings})
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				out.Online, out.Error = false, err.Error()
				central, cerr := c.centralAdminIn(ctx, workflows.CentralAdminInput{Op: "region-settings", Region: region})
				if cerr != nil {
					return errors.Join(err, cerr)
				}
				res.Settings = central.Settings
			}
			for _, s := range res.Settings {
				have[s.Key] = s
			}
			for _, s := range settings.All() {
				info, ok := have[s.Key]
				row := settingRow{Key: s.Key, Default: defaultText(s.Key), Bounds: s.Bounds, Description: s.Description, Pending: []pendingChange{}}
				if ok {
					row.Value, row.Source, row.By, row.At, row.Task, row.Base = info.Value, info.Source, info.By, info.At, info.Task, info.Base
				} else {
					row.Source = "unknown"
				}
				for _, p := range pending {
					if p.Key == s.Key {
						row.Pending = append(row.Pending, p)
					}
				}
				out.Settings = append(out.Settings, row)
			}
			if asJSON {
				return a.printJSON(out)
			}
			return a.printRegionConfig(out)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&wait, "wait", 15*time.Second, "how long to wait for the region to answer before showing central's record")
	return c
}

func (a *App) printRegionConfig(rc regionConfig) error {
	if !rc.Online {
		fmt.Fprintf(a.Stdout, "region %s could not say its settings (%s): the values are central's record of the changes it last applied\n\n", rc.Region, rc.Error)
	}
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE\tPENDING")
	for _, s := range rc.Settings {
		var pending []string
		for _, p := range s.Pending {
			pending = append(pending, p.Value+" (task "+p.Task+")")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Key, dash(s.Value), sourceText(s), dash(strings.Join(pending, ", ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.Stdout)
	for _, s := range rc.Settings {
		fmt.Fprintf(a.Stdout, "%s: %s (%s; default %s)\n", s.Key, s.Description, s.Bounds, s.Default)
	}
	return nil
}

// sourceText says where a setting's value comes from, for people.
func sourceText(s settingRow) string {
	switch s.Source {
	case settings.SourceDefault:
		return "default"
	case settings.SourceConfig:
		return "configuration file"
	case settings.SourcePushed:
		t := "pushed"
		if s.By != "" {
			t += " by " + s.By
		}
		if !s.At.IsZero() {
			t += " " + s.At.Local().Format("2006-01-02 15:04 MST")
		}
		if s.Base != "" && s.Base != s.Value {
			t += " (file/default: " + s.Base + ")"
		}
		return t
	case "unknown":
		return "unknown: the region did not answer, and central has no change of it on record"
	}
	return s.Source
}
