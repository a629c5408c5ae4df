package sibling

import (
	"context"
	"errors"
	"sync"

	"tms/manifest"
	"tms/signing"
	"tms/store"
	"tms/transfer"
)

// First puts the region's siblings before src, a share's source of version id (a peer region,
// central's relay): when a sibling holds the version (its manifest, signed by central), its
// chunks are taken from the sibling, over the LAN and outside the WAN cap, and only those no
// sibling has come from src. Whatever comes is checked by the copy as from any source. When no
// sibling holds the version, src is asked for everything, with no round trip per chunk to the
// siblings.
func (f *Fetcher) First(src transfer.Source, id manifest.ID) transfer.Source {
	return &first{f: f, src: src, id: id}
}

type first struct {
	f   *Fetcher
	src transfer.Source
	id  manifest.ID

	once   sync.Once
	holds  bool // a sibling holds the version
	sigMan []byte
	sig    signing.Signature
}

var (
	_ transfer.SignedSource = (*first)(nil)
	_ transfer.StatsSource  = (*first)(nil)
)

// sibling reports whether a sibling holds the version, asking once.
func (s *first) sibling(ctx context.Context) bool {
	s.once.Do(func() {
		b, sig, err := s.f.Version(ctx, s.id)
		if err == nil {
			s.holds, s.sigMan, s.sig = true, b, sig
			s.f.log().Info("a sibling holds the version a share brings: its chunks come from the sibling first", "version", s.id.Short())
		}
	})
	return s.holds
}

func (s *first) String() string { return s.src.String() }

func (s *first) GetManifestBytes(ctx context.Context, id manifest.ID) ([]byte, error) {
	if id == s.id && s.sibling(ctx) {
		return s.sigMan, nil
	}
	return s.src.GetManifestBytes(ctx, id)
}

func (s *first) GetChunkFrame(ctx context.Context, id manifest.ID) ([]byte, error) {
	if s.sibling(ctx) {
		frame, err := s.f.Chunk(ctx, id)
		if err == nil {
			return frame, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	return s.src.GetChunkFrame(ctx, id)
}

func (s *first) GetSignature(ctx context.Context, id manifest.ID) (signing.Signature, error) {
	if id == s.id && s.sibling(ctx) {
		return s.sig, nil
	}
	if ss, ok := s.src.(transfer.SignedSource); ok {
		return ss.GetSignature(ctx, id)
	}
	return signing.Signature{}, &store.Error{Kind: store.ErrNotFound, Store: s.src.String(), What: "signature of " + id.Short()}
}

func (s *first) GetStats(ctx context.Context, id manifest.ID) (store.Stats, error) {
	if ss, ok := s.src.(transfer.StatsSource); ok {
		return ss.GetStats(ctx, id)
	}
	return store.Stats{}, &store.Error{Kind: store.ErrNotFound, Store: s.src.String(), What: "stats of " + id.Short()}
}
