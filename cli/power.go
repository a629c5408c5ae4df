package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"tms/activities"
	"tms/workflows"
)

// tms power on|off|reboot is a task like a deploy: a PowerTerminals workflow on the region's
// queue, one outcome per terminal.

func (a *App) powerCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "power",
		Short: "Switch a group or terminals of a region on (Wake-on-LAN), off or reboot them (through their agents)",
	}
	c.AddCommand(
		a.powerAction(workflows.PowerActionOn, "Switch terminals on with Wake-on-LAN from their region",
			`On sends Wake-on-LAN from the region's boot interface to each terminal that is not already up,
again every few seconds, until the terminal is seen (a DHCP request or its agent) or
region.boot.wake_timeout passes. A terminal last seen outside the region's boot segment
(region.boot.subnet) is refused: a magic packet does not cross a router.`),
		a.powerAction(workflows.PowerActionOff, "Power terminals off through their agents",
			`Off asks each terminal's agent (the installed OS's tms-agent service, or the in-memory OS)
to power the terminal off; it is off once the agent took the command and stopped polling. A
terminal whose agent does not poll did not answer; one with a capture or deploy running is
refused, naming the task.`),
		a.powerAction(workflows.PowerActionReboot, "Reboot terminals through their agents",
			`Reboot asks each terminal's agent to reboot; it is done once the agent took the command. A
terminal whose agent does not poll did not answer; one with a capture or deploy running is
refused, naming the task.`),
	)
	return c
}

func (a *App) powerAction(action, short, long string) *cobra.Command {
	var tg targets
	var at string
	var wait, asJSON bool
	c := &cobra.Command{
		Use:   action + " --region REGION (--group GROUP | --terminal TERMINAL...) [--at TIME] [--wait] [--json]",
		Short: short,
		Long:  long + "\n\nEach terminal is handled at once and reported on its own: woke, already on, off, rebooted,\ndid not answer or refused, with the reason. The task fails only if every terminal failed.",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tg.check(cmd); err != nil {
				return err
			}
			region, group, terminals := tg.region, tg.group, tg.terminals
			startAt, err := a.startAt(cmd, region, at)
			if err != nil {
				return err
			}
			in := workflows.PowerTerminalsInput{Region: region, Action: action, Group: group, Terminals: terminals, StartAt: startAt}
			id := workflows.Stamped(workflows.PowerWorkflowID(action, region, group, terminals), a.now())
			tags := workflows.TaskTags{Region: region, Kind: workflows.PowerKind(action), Group: group, Terminals: terminals, StartAt: startAt}
			return a.runTask(cmd, taskRequest{Region: region, Queue: activities.RegionQueue(region), ID: id, Tags: tags,
				Workflow: workflows.PowerTerminals, Input: in, JSON: asJSON,
				What: fmt.Sprintf("power %s of %s in region %s", action, &tg, region)}, wait)
		},
	}
	tg.flags(c, "power "+action)
	atFlag(c, &at)
	c.Flags().BoolVar(&wait, "wait", false, "follow the task until every terminal has an outcome")
	c.Flags().BoolVar(&asJSON, "json", false, "print the task (and with --wait its result) as JSON")
	return c
}

// powerSummary is a power task's result for people: each terminal's outcome.
func powerSummary(r workflows.PowerTerminalsResult) string {
	parts := make([]string, 0, len(r.Terminals))
	for _, t := range r.Terminals {
		s := t.Name + " " + t.Outcome
		if t.Reason != "" {
			s += " (" + t.Reason + ")"
		}
		parts = append(parts, s)
	}
	return fmt.Sprintf("power %s: %d of %d terminals done; %s", r.Action, len(r.Terminals)-r.Failed, len(r.Terminals), strings.Join(parts, "; "))
}
