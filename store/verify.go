package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"tms/manifest"
)

// Problem is one thing wrong in a store.
type Problem struct {
	Kind error  // ErrNotFound (a referenced object is missing) or ErrCorrupt
	What string // "chunk 3fa4…", "manifest 91bc…", "tag win11:latest"
	Err  error
	// Images lists the versions that need the object, as NAME@SHORTID.
	Images []string
}

func (p Problem) String() string {
	kind := "corrupt"
	if errors.Is(p.Kind, ErrNotFound) {
		kind = "missing"
	}
	msg := fmt.Sprintf("%s: %s", p.What, kind)
	if p.Err != nil {
		msg += ": " + p.Err.Error()
	}
	if len(p.Images) > 0 {
		msg += " (needed by " + strings.Join(p.Images, ", ") + ")"
	}
	return msg
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Versions int
	Tags     int
	Chunks   int64 // chunk objects read and checked
	Bytes    int64 // their stored size
	Problems []Problem
}

// Verify reads and checks every manifest, tag and chunk in the store with up to jobs reads at
// once. It returns an error only when it could not finish; what it found is in the report.
// progress, if not nil, is called with the stored bytes checked so far.
func (s *Store) Verify(ctx context.Context, jobs int, progress func(int64)) (*VerifyReport, error) {
	rep := &VerifyReport{}
	ids, err := s.VersionIDs(ctx)
	if err != nil {
		return nil, err
	}
	type use struct {
		hash   manifest.Hash
		images []string
	}
	uses := map[manifest.ID]*use{}
	for _, id := range ids {
		v, err := s.GetManifest(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if errors.Is(err, ErrCorrupt) {
			rep.Problems = append(rep.Problems, Problem{Kind: ErrCorrupt, What: "manifest " + id.String(), Err: errors.Unwrap(err)})
			continue
		}
		if err != nil {
			return nil, err
		}
		rep.Versions++
		img := v.Manifest.Meta.Name + "@" + id.Short()
		for _, c := range v.Manifest.Chunks {
			if c.IsZero() {
				continue
			}
			u := uses[c]
			if u == nil {
				u = &use{hash: v.Manifest.Hash}
				uses[c] = u
			}
			if n := len(u.images); n == 0 || u.images[n-1] != img {
				u.images = append(u.images, img)
			}
		}
	}
	tags, err := s.Tags(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range tags {
		rep.Tags++
		if _, err := s.b.Stat(ctx, manifestKey(t.Version)); errors.Is(err, ErrNotFound) {
			rep.Problems = append(rep.Problems, Problem{Kind: ErrNotFound, What: "manifest " + t.Version.String(),
				Images: []string{t.Name + ":" + t.Tag}})
		} else if err != nil {
			return nil, err
		}
	}

	var chunks []ObjectInfo
	seen := map[manifest.ID]bool{}
	if err := s.b.List(ctx, "chunks/", func(o ObjectInfo) error {
		id, err := manifest.ParseID(o.Key[strings.LastIndexByte(o.Key, '/')+1:])
		if err == nil && ChunkKey(id) == o.Key {
			chunks = append(chunks, o)
			seen[id] = true
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if d, ok := asDir(s.b); ok {
		bad, err := d.PackedChunks(ctx, func(c PackedChunk) error {
			if !seen[c.ID] {
				chunks = append(chunks, ObjectInfo{Key: ChunkKey(c.ID), Size: c.Size})
				seen[c.ID] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, b := range bad {
			cause := b.Err
			var se *Error
			if errors.As(b.Err, &se) && se.Err != nil {
				cause = se.Err
			}
			rep.Problems = append(rep.Problems, Problem{Kind: ErrCorrupt, What: "pack " + b.Pack, Err: cause})
		}
	}
	for id, u := range uses {
		if !seen[id] {
			rep.Problems = append(rep.Problems, Problem{Kind: ErrNotFound, What: chunkWhat(id), Images: u.images})
		}
	}

	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(jobs, 1))
	for _, o := range chunks {
		g.Go(func() error {
			id, _ := manifest.ParseID(o.Key[strings.LastIndexByte(o.Key, '/')+1:])
			hashes := []manifest.Hash{manifest.BLAKE3, manifest.SHA256}
			var images []string
			if u := uses[id]; u != nil {
				hashes, images = []manifest.Hash{u.hash}, u.images
			}
			frame, err := s.b.Get(gctx, o.Key)
			if errors.Is(err, ErrNotFound) && images == nil {
				return nil // unreferenced and collected while we looked
			}
			var perr error
			if err == nil {
				for _, h := range hashes {
					if _, perr = s.DecodeChunk(h, id, frame, nil); perr == nil {
						break
					}
				}
			} else if k := Kind(err); k == ErrNotFound || k == ErrCorrupt {
				perr = err // a damaged pack's frame is ErrCorrupt from Get
			} else {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			rep.Chunks++
			rep.Bytes += o.Size
			if progress != nil {
				progress(rep.Bytes)
			}
			if perr != nil {
				var se *Error
				cause := perr
				if errors.As(perr, &se) && se.Err != nil {
					cause = se.Err
				}
				rep.Problems = append(rep.Problems, Problem{Kind: Kind(perr), What: chunkWhat(id), Err: cause, Images: images})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].What < rep.Problems[j].What })
	return rep, nil
}
