package agent

import (
	"context"
	"errors"
	"fmt"

	"tms/agentwire"
	"tms/manifest"
	"tms/signing"
)

// errBaseUnusable marks an update whose base version cannot be diffed against: its manifest
// cannot be read or checked, or its geometry differs from the target's. Nothing was written;
// the task fails permanently and says why (the region then knows the disk's version no
// longer, so the next update of the terminal is a full one).
var errBaseUnusable = errors.New("the version the disk holds cannot be used for an update")

// update writes the task's version to a disk that holds its base version: only the chunks whose
// ids differ between the two manifests are fetched and written, without reading the disk first,
// then flushed and read back and checked. The target's signature is checked as for a deploy;
// the base's id is recomputed from the bytes received, and its signature checked when the region
// sends one.
func (a *Agent) update(ctx context.Context, c *Client, ti agentwire.TaskInfo, pr *reporter) (agentwire.Done, error) {
	baseID, err := manifest.ParseID(ti.Base)
	if err != nil {
		return agentwire.Done{}, permanent(fmt.Errorf("%w: task names base version %q: %w", errBaseUnusable, ti.Base, err))
	}
	v, err := a.targetVersion(ctx, c, ti, "update to")
	if err != nil {
		return agentwire.Done{}, err
	}
	base, err := a.baseManifest(ctx, c, baseID, ti, v.Manifest)
	if err != nil {
		return agentwire.Done{}, err
	}
	changed, changedBytes := ChangedChunks(base, v.Manifest)
	a.log().Info("update", "task", ti.ID, "base", baseID.Short(), "version", v.ID.Short(), "changed_chunks", len(changed), "changed_bytes", changedBytes)

	pr.setPhase(agentwire.PhaseWriting, changedBytes)
	res, err := a.write(ctx, c, ti, v, changed, pr)
	if err != nil {
		return agentwire.Done{}, err
	}
	return agentwire.Done{Written: res.Written + res.Zero, WrittenBytes: res.WrittenBytes, Verified: true, FetchedBytes: pr.fetch.Load()}, nil
}

// baseManifest reads and checks the manifest of the version the disk holds: its id is
// recomputed from the bytes, its signature checked if the region sent one, and its geometry
// (disk size, chunk size, hash) must be the target's.
func (a *Agent) baseManifest(ctx context.Context, c *Client, id manifest.ID, ti agentwire.TaskInfo, target *manifest.Manifest) (*manifest.Manifest, error) {
	b, err := c.GetBaseManifestBytes(ctx)
	if err != nil {
		var e *APIError
		if errors.As(err, &e) && !e.Retry && e.Status == 404 {
			return nil, permanent(fmt.Errorf("%w: the region has no manifest of %s: %w", errBaseUnusable, id.Short(), err))
		}
		return nil, err
	}
	m, err := manifest.Decode(b)
	if err != nil {
		return nil, permanent(fmt.Errorf("%w: manifest of %s: %w", errBaseUnusable, id.Short(), err))
	}
	if got := manifest.VersionID(m.Hash, b); got != id {
		return nil, permanent(fmt.Errorf("%w: the manifest given for %s hashes to %s", errBaseUnusable, id.Short(), got.Short()))
	}
	if len(ti.BaseSignature) > 0 {
		if err := a.CentralKey.VerifyVersion(id, signing.Signature{KeyID: ti.BaseSigner, Signature: ti.BaseSignature}); err != nil {
			return nil, permanent(fmt.Errorf("%w: %w", errBaseUnusable, err))
		}
	}
	if m.DiskSize != target.DiskSize || m.ChunkSize != target.ChunkSize || m.Hash != target.Hash || len(m.Chunks) != len(target.Chunks) {
		return nil, permanent(fmt.Errorf("%w: %s is %d bytes in chunks of %d (%s), %s is %d in chunks of %d (%s)", errBaseUnusable,
			id.Short(), m.DiskSize, m.ChunkSize, m.Hash, ti.Version, target.DiskSize, target.ChunkSize, target.Hash))
	}
	return m, nil
}

// ChangedChunks returns the indexes of the chunks whose ids differ between two manifests of
// the same geometry, and their bytes. The list is never nil.
func ChangedChunks(base, target *manifest.Manifest) ([]int, int64) {
	changed := []int{}
	var n int64
	for i, id := range target.Chunks {
		if base.Chunks[i] != id {
			changed = append(changed, i)
			_, size := target.ChunkRange(i)
			n += size
		}
	}
	return changed, n
}
