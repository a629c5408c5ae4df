package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
)

// `tms schedule pause|resume|trigger|rm NAME`: one change to one schedule each.

// scheduleOp is a command that does one thing to the schedule NAME and says so.
func (a *App) scheduleOp(use, short string, do func(ctx context.Context, h client.ScheduleHandle) error, done func(name string) string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tc, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			if err := do(ctx, tc.ScheduleClient().GetHandle(ctx, args[0])); err != nil {
				return noSchedule(err, args[0])
			}
			fmt.Fprintln(a.Stdout, done(args[0]))
			return nil
		},
	}
}

func (a *App) scheduleState(op string) *cobra.Command {
	var note string
	short := "Pause a schedule: it fires no more until resumed"
	if op == "resume" {
		short = "Resume a paused schedule"
	}
	c := a.scheduleOp(op+" NAME [--note TEXT]", short, func(ctx context.Context, h client.ScheduleHandle) error {
		if note == "" {
			note = op + "d with tms schedule " + op
		}
		if op == "pause" {
			return h.Pause(ctx, client.SchedulePauseOptions{Note: note})
		}
		return h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: note})
	}, func(name string) string { return "schedule " + name + " " + op + "d" })
	c.Flags().StringVar(&note, "note", "", "why, for 'tms schedule show'")
	return c
}

func (a *App) scheduleTrigger() *cobra.Command {
	return a.scheduleOp("trigger NAME", "Fire a schedule now (skipped if its previous task is still running)",
		func(ctx context.Context, h client.ScheduleHandle) error {
			return h.Trigger(ctx, client.ScheduleTriggerOptions{})
		},
		func(name string) string {
			return fmt.Sprintf("schedule %s triggered: 'tms schedule show %s' shows the task it started", name, name)
		})
}

func (a *App) scheduleRm() *cobra.Command {
	return a.scheduleOp("rm NAME", "Delete a schedule (a task it started goes on)",
		func(ctx context.Context, h client.ScheduleHandle) error { return h.Delete(ctx) },
		func(name string) string { return "schedule " + name + " removed" })
}
