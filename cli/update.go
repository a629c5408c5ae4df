package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"tms/activities"
	"tms/workflows"
)

func (a *App) updateCommand() *cobra.Command {
	var tg targets
	var at string
	var concurrency int
	var wait, asJSON bool
	c := &cobra.Command{
		Use:   "update --region REGION (--group GROUP | --terminal TERMINAL...) IMAGE [--concurrency N] [--at TIME] [--wait] [--json]",
		Short: "Bring the disks of a group or of some terminals to an image's version, writing only what changed",
		Long: `Update first makes IMAGE (NAME, NAME:TAG or NAME@VERSION) local to the region, then decides for
each terminal from the version the region recorded for its disk and the version chain:

  stop         the disk holds the version already: the terminal is not booted
  incremental  the disk holds an ancestor: only the chunks that changed are fetched,
               written and read back
  full         nothing is recorded, the recorded version is not on the chain, or the
               region's store cannot show the chain: a deploy (every block compared,
               what differs written, everything read back)

An incremental update trusts that the disk still holds what was recorded; 'tms deploy' is the
full restore that trusts nothing. A terminal that fails is reported and the others go on.`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tg.check(cmd); err != nil {
				return err
			}
			if concurrency < 0 {
				return usageError{fmt.Errorf("%s: --concurrency must be positive", cmd.CommandPath())}
			}
			region, group, terminals := tg.region, tg.group, tg.terminals
			startAt, err := a.startAt(cmd, region, at)
			if err != nil {
				return err
			}
			in := workflows.UpdateImageInput{Region: region, Group: group, Terminals: terminals, Image: args[0], Concurrency: concurrency, StartAt: startAt}
			id := workflows.Stamped(workflows.UpdateWorkflowID(region, group, terminals, args[0]), a.now())
			tags := workflows.TaskTags{Region: region, Kind: workflows.TaskUpdate, Group: group, Terminals: terminals, Image: args[0], StartAt: startAt}
			return a.runTask(cmd, taskRequest{Region: region, Queue: activities.RegionQueue(region), ID: id, Tags: tags,
				Workflow: workflows.UpdateImage, Input: in, What: fmt.Sprintf("update of %s to %s in region %s", &tg, args[0], region),
				JSON: asJSON}, wait)
		},
	}
	tg.flags(c, "update")
	c.Flags().IntVar(&concurrency, "concurrency", 0, "terminals written at once (default: all of them; they fetch chunks from each other)")
	atFlag(c, &at)
	c.Flags().BoolVar(&wait, "wait", false, "follow the update until it ends")
	c.Flags().BoolVar(&asJSON, "json", false, "print the started task, or with --wait the result, as JSON")
	return c
}

// updateSummary says in one line what an update did.
func updateSummary(r workflows.UpdateImageResult) string {
	s := fmt.Sprintf("version %s: %d terminal(s) held it already, %d updated incrementally, %d in full; %s fetched, %s written",
		short(r.Version), r.Stopped, r.Incremental, r.Full, humanBytes(r.FetchedBytes), humanBytes(r.WrittenBytes))
	for _, t := range r.Terminals {
		if !t.OK {
			s += "; " + t.Name + " (" + string(t.Decision) + ") failed: " + t.Error
		}
	}
	return s
}
