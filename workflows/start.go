package workflows

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/manifest"
	"tms/state"
)

// A task may be asked for now and started later (`tms deploy ... --at 07:00`): the workflow
// starts at once, so it is listed and can be changed or canceled, and waits on a durable timer
// until its start time. Until then the "modify" Update changes its start time, its targets and
// its image; once it has started, the Update is refused.
//
// Every task workflow adopts this with one call at its top, before it does anything:
//
//	if err := awaitStart(ctx, startFields{At: &in.StartAt, Image: &in.Image}, tags); err != nil {
//		return res, err
//	}
//
// A zero start time means now: the task goes on at once and its history gains no event, so
// histories recorded before tasks could wait replay unchanged.

// UpdateModify is the name of the Update that changes a task that has not started yet.
const UpdateModify = "modify"

// maxModifyTerminals bounds the terminals one "modify" may name.
const maxModifyTerminals = 1000

// ModifyInput is what a "modify" Update changes; zero fields are left as they are. Group and
// Terminals replace each other: giving one drops the other.
type ModifyInput struct {
	StartAt   time.Time
	Group     string
	Terminals []string
	Image     string
}

// ModifyResult is the task's plan after the change.
type ModifyResult struct {
	StartAt   time.Time
	Group     string   `json:",omitempty"`
	Terminals []string `json:",omitempty"`
	Image     string   `json:",omitempty"`
}

// ErrStarted is the type of the error a "modify" gets once its task has started.
const ErrStarted = "TaskStarted"

// startFields point at the fields of a task's input that "modify" may change. A nil field
// cannot be changed for that kind of task (a capture's terminal, a share's region).
type startFields struct {
	At        *time.Time
	Group     *string
	Terminals *[]string
	Image     *string
	// ImageIsName: the image is a name to capture into, not a reference to an existing version.
	ImageIsName bool
}

// awaitStart registers the "modify" Update and, if the task's start time is ahead, waits until
// it comes (a later modify moves it). tags gives the task's search attributes as they stand; a
// modify upserts them, so listings follow the change. Cancelling the task while it waits ends
// it before it has touched anything.
func awaitStart(ctx workflow.Context, f startFields, tags func() TaskTags) error {
	var started time.Time
	changed := false
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	refuseStarted := func() error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("task %s started at %s; it can no longer be changed: cancel it and start another",
			id, started.UTC().Format(time.RFC3339)), ErrStarted, nil)
	}
	validate := func(ctx workflow.Context, m ModifyInput) error {
		if !started.IsZero() {
			return refuseStarted()
		}
		return f.check(m, workflow.Now(ctx))
	}
	apply := func(ctx workflow.Context, m ModifyInput) (ModifyResult, error) {
		if !started.IsZero() {
			return ModifyResult{}, refuseStarted()
		}
		f.apply(m)
		changed = true
		if err := retagTask(ctx, tags()); err != nil {
			return ModifyResult{}, err
		}
		return f.plan(), nil
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateModify, apply, workflow.UpdateHandlerOptions{Validator: validate}); err != nil {
		return err
	}
	for f.At != nil {
		wait := f.At.Sub(workflow.Now(ctx))
		if wait <= 0 {
			break
		}
		changed = false
		// Wakes when the time comes or a modify changed the plan (then the wait starts over,
		// on a new timer: the old one is canceled, not left to fire).
		tctx, cancelTimer := workflow.WithCancel(ctx)
		timer := workflow.NewTimer(tctx, wait)
		err := workflow.Await(ctx, func() bool { return changed || timer.IsReady() })
		cancelTimer()
		if err == nil {
			err = ctx.Err() // a cancel readies the timer too
		}
		if err != nil {
			return err
		}
	}
	started = workflow.Now(ctx)
	return nil
}

// check refuses a change this task cannot take, or values that are wrong.
func (f startFields) check(m ModifyInput, now time.Time) error {
	bad := func(format string, args ...any) error {
		return activities.ErrBadInput.New(fmt.Sprintf(format, args...), nil)
	}
	switch {
	case m.StartAt.IsZero() && m.Group == "" && len(m.Terminals) == 0 && m.Image == "":
		return bad("nothing to change: give a start time, a group, terminals or an image")
	case !m.StartAt.IsZero() && f.At == nil:
		return bad("this task's start time cannot be changed")
	case !m.StartAt.IsZero() && m.StartAt.Before(now):
		return bad("start time %s is in the past (it is %s)", m.StartAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case m.Group != "" && len(m.Terminals) > 0:
		return bad("give a group or terminals, not both")
	case (m.Group != "" || len(m.Terminals) > 0) && (f.Group == nil || f.Terminals == nil):
		return bad("this task's targets cannot be changed")
	case m.Image != "" && f.Image == nil:
		return bad("this task's image cannot be changed")
	case len(m.Terminals) > maxModifyTerminals:
		return bad("%d terminals named; at most %d", len(m.Terminals), maxModifyTerminals)
	}
	if m.Group != "" {
		if err := manifest.ValidateName(m.Group); err != nil {
			return bad("group: %s", err)
		}
	}
	for _, t := range m.Terminals {
		if _, err := state.NormalizeMAC(t); err == nil {
			continue
		}
		if err := manifest.ValidateName(t); err != nil {
			return bad("terminal %q is neither a MAC nor a name: %s", clip(t), err)
		}
	}
	if m.Image != "" {
		var err error
		if f.ImageIsName {
			err = manifest.ValidateName(m.Image)
		} else {
			_, err = manifest.ParseRef(m.Image)
		}
		if err != nil {
			return bad("%s", err)
		}
	}
	return nil
}

func (f startFields) apply(m ModifyInput) {
	if !m.StartAt.IsZero() {
		*f.At = m.StartAt
	}
	if m.Group != "" {
		*f.Group, *f.Terminals = m.Group, nil
	}
	if len(m.Terminals) > 0 {
		*f.Group, *f.Terminals = "", slices.Clone(m.Terminals)
	}
	if m.Image != "" {
		*f.Image = m.Image
	}
}

func (f startFields) plan() ModifyResult {
	var p ModifyResult
	if f.At != nil {
		p.StartAt = *f.At
	}
	if f.Group != nil {
		p.Group = *f.Group
	}
	if f.Terminals != nil {
		p.Terminals = *f.Terminals
	}
	if f.Image != nil {
		p.Image = *f.Image
	}
	return p
}

// retagTask sets all of a task's search attributes to t, removing the group or terminals it no
// longer has.
func retagTask(ctx workflow.Context, t TaskTags) error {
	u := t.searchAttributes()
	if t.Group == "" {
		u = append(u, AttrGroup.ValueUnset())
	}
	if len(t.Terminals) == 0 {
		u = append(u, AttrTerminals.ValueUnset())
	}
	return workflow.UpsertTypedSearchAttributes(ctx, u...)
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// IsStarted reports whether err is a "modify" refused because its task has started.
func IsStarted(err error) bool {
	var ae *temporal.ApplicationError
	return errors.As(err, &ae) && ae.Type() == ErrStarted
}
