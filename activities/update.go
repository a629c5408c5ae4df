package activities

import (
	"context"
	"errors"
	"fmt"

	"tms/manifest"
	"tms/state"
	"tms/store"
)

// Decision is how an update treats one terminal. The words travel in workflow results and
// `tms task show --json`: they do not change.
type Decision string

// Update decisions.
const (
	// DecisionStop: the disk holds the target version already; the terminal is not booted.
	DecisionStop Decision = "stop"
	// DecisionIncremental: the disk holds an ancestor of the target of the same geometry; only
	// the chunks that differ between the two are fetched, written and read back.
	DecisionIncremental Decision = "incremental"
	// DecisionFull: anything else (no version recorded, a version off the target's chain, a
	// chain or base the region's store cannot show, another geometry): a deploy, which
	// compares every block, writes what differs and reads everything back.
	DecisionFull Decision = "full"
)

// maxChain bounds how many parents DecideUpdate walks from the target version.
const maxChain = 1000

// DecideInput asks how an update to Version treats each of Terminals.
type DecideInput struct {
	Version   string
	Terminals []TerminalRef
}

// TerminalDecision is one terminal's decision and why.
type TerminalDecision struct {
	MAC      string
	Decision Decision
	Reason   string
	// Base is the version the disk holds, for an incremental update.
	Base string `json:",omitempty"`
	// ChangedBytes is how many bytes of chunks differ between Base and the target (an
	// incremental update).
	ChangedBytes int64 `json:",omitempty"`
}

// DecideResult holds a decision for each terminal, in the input's order.
type DecideResult struct{ Terminals []TerminalDecision }

// DecideUpdate decides, for each terminal, from the version the region's inventory records for
// its disk and the target's chain of parents in the region's store: the same version → stop;
// an ancestor of the same disk size, chunk size and hash → incremental; anything else → full,
// with the reason. It reads and writes nothing on the terminals.
func (r *Region) DecideUpdate(ctx context.Context, in DecideInput) (DecideResult, error) {
	var res DecideResult
	target, tv, _, err := r.taskVersion(ctx, in.Version)
	if err != nil {
		return res, err
	}
	var terms []state.Terminal
	wanted := map[manifest.ID]bool{} // versions held that the chain walk looks for
	for _, ref := range in.Terminals {
		t, err := r.terminal(ctx, ref.MAC)
		if err != nil {
			return res, err
		}
		terms = append(terms, t)
		if !t.Version.IsZero() && t.Version != target {
			wanted[t.Version] = true
		}
	}
	chain, end, err := r.chain(ctx, tv, wanted)
	if err != nil {
		return res, err
	}
	for _, t := range terms {
		d := TerminalDecision{MAC: t.MAC, Decision: DecisionFull}
		held := t.Version
		switch {
		case held.IsZero():
			d.Reason = "no version is recorded for its disk"
		case held == target:
			d.Decision, d.Reason = DecisionStop, "holds "+target.Short()+" already"
		default:
			a, on := chain[held]
			base := a.Manifest
			switch {
			case !on && end != "":
				d.Reason = fmt.Sprintf("holds %s, which is not among the %d ancestors of %s the region's store shows (%s)", held.Short(), len(chain), target.Short(), end)
			case !on:
				d.Reason = fmt.Sprintf("holds %s, which is not on the chain of %s (diverged)", held.Short(), target.Short())
			case base.DiskSize != tv.Manifest.DiskSize || base.ChunkSize != tv.Manifest.ChunkSize || base.Hash != tv.Manifest.Hash:
				d.Reason = fmt.Sprintf("holds %s, an ancestor of another geometry (%d bytes in chunks of %d, %s; %s has %d in chunks of %d, %s)",
					held.Short(), base.DiskSize, base.ChunkSize, base.Hash, target.Short(), tv.Manifest.DiskSize, tv.Manifest.ChunkSize, tv.Manifest.Hash)
			default:
				n, bytes := changed(base, tv.Manifest)
				d.Decision, d.Base, d.ChangedBytes = DecisionIncremental, held.String(), bytes
				d.Reason = fmt.Sprintf("holds %s, %s back on its chain: %d of %d chunks changed", held.Short(), plural(a.steps, "version"), n, len(tv.Manifest.Chunks))
			}
		}
		res.Terminals = append(res.Terminals, d)
	}
	return res, nil
}

// ancestor is a version on the target's chain, with how many steps back it is.
type ancestor struct {
	*manifest.Manifest
	steps int
}

// chain reads the target's ancestors from the region's store, keyed by id, until it has found
// every wanted version (a manifest of a big disk is megabytes: the walk reads no further than it
// must). end says why the walk stopped before the chain's root and the wanted versions, if it
// did: a parent the store does not hold, a loop, or the bound.
func (r *Region) chain(ctx context.Context, v *store.Version, wanted map[manifest.ID]bool) (map[manifest.ID]ancestor, string, error) {
	out := map[manifest.ID]ancestor{}
	m := v.Manifest
	for steps, found := 1, 0; !m.Parent.IsZero() && found < len(wanted); steps++ {
		if steps > maxChain {
			return out, fmt.Sprintf("the walk stopped after %d versions", maxChain), nil
		}
		if _, seen := out[m.Parent]; seen || m.Parent == v.ID {
			return out, "the chain loops at " + m.Parent.Short(), nil
		}
		p, err := r.Store.GetManifest(ctx, m.Parent)
		if errors.Is(err, store.ErrNotFound) {
			return out, "it does not hold " + m.Parent.Short(), nil
		}
		if err != nil {
			return nil, "", err
		}
		out[m.Parent] = ancestor{p.Manifest, steps}
		if wanted[m.Parent] {
			found++
		}
		m = p.Manifest
	}
	return out, "", nil
}

// updateBase checks an update task's base version: the region holds it and it has the
// target's geometry (DecideUpdate decided so; the store may have changed since).
func (r *Region) updateBase(ctx context.Context, base string, target *store.Version) (manifest.ID, error) {
	if base == "" {
		return manifest.ID{}, ErrBadInput.New("an update names the version its terminal holds (its base)", nil)
	}
	id, v, err := r.heldVersion(ctx, base, r.Store)
	if err != nil {
		return id, err
	}
	b, t := v.Manifest, target.Manifest
	if b.DiskSize != t.DiskSize || b.ChunkSize != t.ChunkSize || b.Hash != t.Hash {
		return id, ErrBadInput.New(fmt.Sprintf("base version %s is of another geometry than %s: update with a full deploy", id.Short(), target.ID.Short()), nil)
	}
	return id, nil
}

// stillHolds checks that terminal t is still recorded as holding base, the version its update
// was decided from: another task may have written its disk since DecideUpdate. A retried
// PrepareTask of the same task passes (its agent may already have made the record unknown).
func (r *Region) stillHolds(ctx context.Context, t state.Terminal, base manifest.ID, task string) error {
	if t.Version == base {
		return nil
	}
	old, err := r.Inventory.Task(ctx, task)
	if err == nil && old.Base == base.String() {
		return nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	now := "no known version"
	if !t.Version.IsZero() {
		now = t.Version.Short()
	}
	return ErrConflict.New(fmt.Sprintf("terminal %s is recorded as holding %s now, not %s, which its update was decided from: update it again", terminalName(t), now, base.Short()), nil)
}

func changed(base, target *manifest.Manifest) (n int, bytes int64) {
	for i, id := range target.Chunks {
		if i >= len(base.Chunks) || base.Chunks[i] != id {
			_, size := target.ChunkRange(i)
			n, bytes = n+1, bytes+size
		}
	}
	return n, bytes
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
