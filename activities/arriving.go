package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	"tms/arrival"
	"tms/manifest"
	"tms/store"
	"tms/transfer"
)

// Deploys while the image arrives (docs/sharing.md): a copy into the region's store announces
// the version in r.Arrivals once its manifest is checked against its id and central's
// signature of it verified, and each chunk as soon as it is checked, so the agent API serves
// them at once. A deploy's terminal tasks may be prepared on such a version (taskVersion); it
// is published in the store only when the copy completes.

// taskVersion reads the version a deploy or update writes: from the store, or the one arriving
// (arriving true) while a share copies it here.
func (r *Region) taskVersion(ctx context.Context, version string) (id manifest.ID, v *store.Version, arriving bool, err error) {
	id, v, err = r.heldVersion(ctx, version, r.Store)
	if err == nil || !ErrNotHere.Matches(err) {
		return id, v, false, err
	}
	if a := r.Arrivals.Running(id); a != nil {
		return id, a.Version(), true, nil
	}
	return id, nil, false, err
}

// copyHere runs a copy into the region's own store, announcing the version as it arrives (see
// above). A copy of a version that another copy in this process is bringing already waits for
// that one to end first, heartbeating, and then moves only what it did not: two deploys of one
// version share one arrival.
func (r *Region) copyHere(ctx context.Context, src transfer.Source, id manifest.ID, opts transfer.Options) (*transfer.Result, error) {
	if r.Arrivals == nil {
		return transfer.Copy(ctx, src, r.Store, id, opts)
	}
	var a *arrival.Arrival
	opts.Manifest = func(ctx context.Context, v *store.Version) error {
		var err error
		a, err = r.announce(ctx, src, v)
		return err
	}
	opts.Arrived = func(c manifest.ID, frame []byte) {
		if a != nil {
			a.Arrived(c, frame)
		}
	}
	opts.Committed = func(ids []manifest.ID) {
		if a != nil {
			a.Committed(ids)
		}
	}
	res, err := transfer.Copy(ctx, src, r.Store, id, opts)
	if a != nil {
		a.End(err)
	}
	return res, err
}

// announce registers arriving version v, once central's signature of it, from src, checks with
// the region's copy of central's key (the signature is stored at once, so the agent API hands
// it to the agents as for a published version). A version src has no valid signature for is
// not announced: it arrives as before, and deploys refuse it once it is here. If another copy
// brings v already, announce waits for it to end and tries again.
func (r *Region) announce(ctx context.Context, src transfer.Source, v *store.Version) (*arrival.Arrival, error) {
	ss, ok := src.(transfer.SignedSource)
	if !ok || r.CentralKey.IsZero() {
		return nil, nil
	}
	sig, err := ss.GetSignature(ctx, v.ID)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrCorrupt) {
			return nil, fmt.Errorf("signature of %s from %s: %w", v.ID.Short(), src, err)
		}
		warn(ctx, "arriving version has no signature: it is served only once it is here", "version", v.ID.Short(), "source", src.String(), "err", err)
		return nil, nil
	}
	if err := r.CentralKey.VerifyManifest(v.ID, v.Encoded, sig); err != nil {
		warn(ctx, "arriving version's signature does not check: it is served only once it is here", "version", v.ID.Short(), "source", src.String(), "err", err)
		return nil, nil
	}
	if err := r.Store.PutSignature(ctx, v.ID, sig); err != nil {
		return nil, err
	}
	for {
		a, ok := r.Arrivals.Begin(v)
		if ok {
			return a, nil
		}
		// Another share brings v: join it rather than move the version twice.
		t := time.NewTicker(time.Second)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-a.Done():
				break wait
			case <-t.C:
				if activity.IsActivity(ctx) {
					have, total, _ := a.Progress()
					activity.RecordHeartbeat(ctx, transfer.Progress{Done: int64(have), Total: int64(total)})
				}
			}
		}
		t.Stop()
	}
}

// AwaitVersionInput names a version a deploy or update waits for.
type AwaitVersionInput struct {
	Version string
	// Poll is how often the store is looked at (default 500 ms).
	Poll time.Duration
}

// AwaitVersionResult says how the version is here.
type AwaitVersionResult struct {
	// Arriving: a share is still bringing it (its manifest checked and signed); false: it is
	// published in the store.
	Arriving bool
}

// AwaitVersion waits, heartbeating, until the region's store holds the version or a share
// brings it (its manifest checked and its signature verified): a deploy starts its terminals
// then, while the share goes on. It waits as long as its caller lets it: the workflow cancels
// it when the share fails.
func (r *Region) AwaitVersion(ctx context.Context, in AwaitVersionInput) (AwaitVersionResult, error) {
	id, err := manifest.ParseID(in.Version)
	if err != nil {
		return AwaitVersionResult{}, ErrBadVersion.New(err.Error(), err)
	}
	poll := in.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	for {
		if r.Arrivals.Running(id) != nil {
			return AwaitVersionResult{Arriving: true}, nil
		}
		here, err := r.Store.HasVersion(ctx, id)
		if err != nil {
			return AwaitVersionResult{}, err
		}
		if here {
			return AwaitVersionResult{}, nil
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, nil)
		}
		select {
		case <-ctx.Done():
			return AwaitVersionResult{}, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// warn logs through the activity's logger (nothing outside an activity).
func warn(ctx context.Context, msg string, kv ...any) {
	if activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Warn(msg, kv...)
	}
}
