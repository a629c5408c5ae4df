package activities

import (
	"context"
	"errors"
	"fmt"

	"tms/state"
	"tms/store"
)

// OpEnrollToken records an enrollment token by its hash (AdminInput.TokenHash) for Group (empty:
// any enrolled terminal), valid for TTL, re-keying terminals that have a key if Rekey. The
// token itself never leaves the admin's machine but for the terminals: it is in no history.
const OpEnrollToken = "enroll-token"

// addEnrollToken is the region's side of `tms terminal enroll-token`.
func (r *Region) addEnrollToken(ctx context.Context, in AdminInput) error {
	now := r.now()
	err := r.Inventory.AddEnrollToken(ctx, state.EnrollToken{Hash: in.TokenHash, Group: in.Group, Rekey: in.Rekey, Expires: now.Add(in.TTL)}, now)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnknownGroup.New(fmt.Sprintf("region %s has no group %s", r.ID, in.Group), err)
	}
	if err != nil && databaseDown(err) {
		return err
	}
	if err != nil {
		return ErrBadInput.New(err.Error(), err)
	}
	return nil
}
