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
	v, err := a.targetVersion(ctx, c, ti, "deploy")
	if err != nil {
		return agentwire.Done{}, err
	}
	pr.setPhase(agentwire.PhaseWriting, v.Manifest.DiskSize)
	res, err := a.write(ctx, c, ti, v, nil, pr)
	if err != nil {
		return agentwire.Done{}, err
	}
	return agentwire.Done{Written: res.Written, WrittenBytes: res.WrittenBytes, Skipped: res.Skipped, Verified: true, FetchedBytes: pr.fetch.Load()}, nil
}

// targetVersion checks that the disk can take the version a deploy or update writes, reads its
// manifest and checks it is central's: nothing is written before the id is recomputed from the
// bytes received and central's signature of that id verified. verb names the task in errors.
func (a *Agent) targetVersion(ctx context.Context, c *Client, ti agentwire.TaskInfo, verb string) (*store.Version, error) {
	id, err := manifest.ParseID(ti.Version)
	if err != nil {
		return nil, permanent(fmt.Errorf("task names version %q: %w", ti.Version, err))
	}
	size, err := DiskSize(a.Disk)
	if err != nil {
		return nil, permanent(fmt.Errorf("cannot open the disk: %w", err))
	}
	if size < ti.DiskSize {
		return nil, permanent(fmt.Errorf("disk %s holds %d bytes; image %s needs %d", a.Disk, size, ti.Image, ti.DiskSize))
	}
	if a.CentralKey.IsZero() {
		return nil, permanent(errors.New("this agent has no central public key: rebuild the boot environment with --central-key"))
	}
	b, err := c.GetManifestBytes(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := a.CentralKey.VerifyManifest(id, b, signing.Signature{KeyID: ti.Signer, Signature: ti.Signature}); err != nil {
		return nil, permanent(fmt.Errorf("refusing to %s %s: %w", verb, id.Short(), err))
	}
	m, err := manifest.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", id.Short(), err)
	}
	return &store.Version{ID: id, Manifest: m, Encoded: b}, nil
}

// write writes version v to the disk, all of it or only the chunks only names, reads back what
// it wrote and checks it, reporting progress.
// When the region runs a swarm for the version, the chunks come from the other terminals
// writing it as its tracker says, and this one serves them what it holds (swarm.go).
func (a *Agent) write(ctx context.Context, c *Client, ti agentwire.TaskInfo, v *store.Version, only []int, pr *reporter) (*imageio.ExportResult, error) {
	w := transfer.NewWindow(c, transfer.WindowOptions{ChunkSize: v.Manifest.ChunkSize, Bytes: a.Window})
	defer w.Close()
	getter := &countingGetter{g: w, pr: pr}
	var fetcher imageio.Fetcher
	if ti.Swarm {
		s, err := a.joinSwarm(c, v, pr)
		if err != nil {
			a.log().Warn("cannot serve peers; fetching every chunk from the region", "err", err)
		} else {
			pr.swarm, fetcher = s, s
		}
	}
	res, err := imageio.Export(ctx, getter, v, a.Disk, imageio.ExportOptions{
		Jobs: a.jobs(), Verify: true, FixedSize: true, Log: a.log(), Only: only, Fetcher: fetcher,
		Progress: func(done, total int64) {
			if done == total {
				pr.setPhase(agentwire.PhaseVerifying, total)
			} else {
				pr.done.Store(done)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	pr.verified()
	a.log().Info("disk written and verified", "version", v.ID.Short(), "written", res.Written, "skipped", res.Skipped,
		"fetched_bytes", pr.fetch.Load(), "write", res.Write, "flush", res.Flush, "verify", res.Verify, "verify_total", res.VerifyTotal)
	if pr.swarm != nil {
		pr.swarm.finish(ctx)
	}
	return res, nil
}

// countingGetter counts the chunk bytes a deploy fetches (decompressed and checked).
type countingGetter struct {
	g  imageio.Prefetcher
	pr *reporter
}

var _ imageio.Prefetcher = (*countingGetter)(nil)

func (g *countingGetter) Want(ctx context.Context, h manifest.Hash, id manifest.ID) error {
	return g.g.Want(ctx, h, id)
}

func (g *countingGetter) GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	data, err := g.g.GetChunk(ctx, h, id, buf)
	if err == nil {
		g.pr.fetch.Add(int64(len(data)))
	}
	return data, err
}
