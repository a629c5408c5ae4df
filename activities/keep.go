package activities

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/activity"

	"tms/manifest"
	"tms/store"
)

// Holds keep the versions a region's tasks use in its store (see store.Hold): 'tms image rm'
// refuses to remove them and gc keeps their chunks. A deploy holds its version with holdForTask
// in PrepareTask, and FinishTask releases it (one delete: the task records its version). The
// hold lasts at most until the task's boot action expires (TaskInput.Expires), since until then
// a terminal may boot into the deploy and stream the version, and a task that outlives it renews
// with HoldVersion.

// RelayHoldTTL is how long PushToRelay's hold on the version it uploads lasts without renewal;
// the push renews it while it runs.
const RelayHoldTTL = 5 * time.Minute

// holdForTask holds version id in the region's store for task (the terminal workflow's id) until
// until, or renews the hold. PrepareTask calls it for a deploy with the task's Expires. A version
// the store does not hold, or that is being removed, is a non-retryable ErrNotHere.
func (r *Region) holdForTask(ctx context.Context, task string, id manifest.ID, until time.Time) error {
	return r.hold(ctx, task, id, until, r.Store.Hold)
}

// holdArriving is holdForTask for a version a share is still bringing (arriving.go): the hold
// is taken before the version is published, and stands once it is.
func (r *Region) holdArriving(ctx context.Context, task string, id manifest.ID, until time.Time) error {
	return r.hold(ctx, task, id, until, r.Store.Reserve)
}

func (r *Region) hold(ctx context.Context, task string, id manifest.ID, until time.Time, hold func(context.Context, manifest.ID, string, time.Time) error) error {
	if limit := time.Now().Add(store.MaxHoldDuration); until.After(limit) {
		until = limit
	}
	err := hold(ctx, id, task, until)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return ErrNotHere.New("region "+r.ID+" does not hold version "+id.Short()+" (was it removed?)", err)
	case store.Kind(err) == nil && ctx.Err() == nil:
		// Not the store failing: a holder or expiry no retry mends.
		return ErrBadInput.New(err.Error(), err)
	}
	return err
}

// releaseTask drops every hold of task in the region's store, on whatever version (it lists
// them all): for ReleaseHolds, whose caller may not know what its task held.
func (r *Region) releaseTask(ctx context.Context, task string) error {
	return r.Store.ReleaseAll(ctx, task)
}

// HoldInput asks a region to hold a version for a task, or to renew the hold.
type HoldInput struct {
	Version string
	Holder  string    // the task: a workflow id such as deploy/region-b/lab/pc-07
	Until   time.Time // when the hold lapses unless renewed
}

// HoldVersion holds a version in the region's store: for a workflow that renews a hold while it
// waits, or a schedule that keeps a version for a class.
func (r *Region) HoldVersion(ctx context.Context, in HoldInput) error {
	id, err := manifest.ParseID(in.Version)
	if err != nil {
		return ErrBadVersion.New(err.Error(), err)
	}
	return r.holdForTask(ctx, in.Holder, id, in.Until)
}

// ReleaseInput names a task whose holds end.
type ReleaseInput struct{ Holder string }

// ReleaseHolds drops every hold of a task in the region's store.
func (r *Region) ReleaseHolds(ctx context.Context, in ReleaseInput) error {
	return r.releaseTask(ctx, in.Holder)
}

// holderFor names the task an activity works for: its workflow's id, or fallback outside one.
func holderFor(ctx context.Context, fallback string) string {
	if activity.IsActivity(ctx) {
		if id := activity.GetInfo(ctx).WorkflowExecution.ID; store.ValidateHolder(id) == nil {
			return id
		}
	}
	return fallback
}
