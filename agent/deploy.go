package agent

import (
	"context"
	"errors"
	"fmt"

	"tms/agentwire"
	"tms/imageio"
	"tms/manifest"
	"tms/signing"
	"tms/store"
	"tms/transfer"
)

// deploy writes the task's version to the disk and verifies it.
func (a *Agent) deploy(ctx context.Context, c *Client, ti agentwire.TaskInfo, pr *reporter) (agentwire.Done, error) {
	id, err := manifest.ParseID(ti.Version)
	if err != nil {
		return agentwire.Done{}, permanent(fmt.Errorf("task names version %q: %w", ti.Version, err))
	}
	size, err := DiskSize(a.Disk)
	if err != nil {
		return agentwire.Done{}, permanent(fmt.Errorf("cannot open the disk: %w", err))
	}
	if size < ti.DiskSize {
		return agentwire.Done{}, permanent(fmt.Errorf("disk %s holds %d bytes; image %s needs %d", a.Disk, size, ti.Image, ti.DiskSize))
	}
	if a.CentralKey.IsZero() {
		return agentwire.Done{}, permanent(errors.New("this agent has no central public key: rebuild the boot environment with --central-key"))
	}
	b, err := c.GetManifestBytes(ctx, id)
	if err != nil {
		return agentwire.Done{}, err
	}
	// Nothing is written before the version is known to be central's: the id is recomputed
	// from the bytes received, and central's signature of that id checked.
	if err := a.CentralKey.VerifyManifest(id, b, signing.Signature{KeyID: ti.Signer, Signature: ti.Signature}); err != nil {
		return agentwire.Done{}, permanent(fmt.Errorf("refusing to deploy %s: %w", id.Short(), err))
	}
	m, err := manifest.Decode(b)
	if err != nil {
		return agentwire.Done{}, fmt.Errorf("manifest of %s: %w", id.Short(), err)
	}
	pr.setPhase(agentwire.PhaseWriting, m.DiskSize)
	getter := &countingGetter{g: transfer.NewGetter(c), pr: pr}
	res, err := imageio.Export(ctx, getter, &store.Version{ID: id, Manifest: m, Encoded: b}, a.Disk, imageio.ExportOptions{
		Jobs: a.jobs(), Verify: true, FixedSize: true, Log: a.log(),
		Progress: func(done, total int64) {
			if done == total {
				pr.setPhase(agentwire.PhaseVerifying, total)
			} else {
				pr.done.Store(done)
			}
		},
	})
	if err != nil {
		return agentwire.Done{}, err
	}
	return agentwire.Done{Written: res.Written, WrittenBytes: res.WrittenBytes, Skipped: res.Skipped, Verified: true, FetchedBytes: pr.fetch.Load()}, nil
}

// countingGetter counts the chunk bytes a deploy fetches (decompressed and checked).
type countingGetter struct {
	g  *transfer.Getter
	pr *reporter
}

func (g *countingGetter) GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	data, err := g.g.GetChunk(ctx, h, id, buf)
	if err == nil {
		g.pr.fetch.Add(int64(len(data)))
	}
	return data, err
}
