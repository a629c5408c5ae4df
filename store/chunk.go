package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"

	"tms/manifest"
)

// Codec compresses chunks with zstd and checks them on the way back.
type Codec struct {
	level zstd.EncoderLevel
	encs  sync.Pool
	decs  sync.Pool
}

// NewCodec returns a codec that compresses at level (0: DefaultLevel).
func NewCodec(level zstd.EncoderLevel) *Codec {
	if level == 0 {
		level = DefaultLevel
	}
	return &Codec{level: level}
}

// DefaultLevel is the zstd level chunks are stored at; docs/format.md has the measurement.
const DefaultLevel = zstd.SpeedFastest

// Compress appends the zstd frame of data to dst.
func (c *Codec) Compress(dst, data []byte) []byte {
	enc, _ := c.encs.Get().(*zstd.Encoder)
	if enc == nil {
		var err error
		enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(c.level), zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err) // only for invalid options
		}
	}
	dst = enc.EncodeAll(data, dst)
	c.encs.Put(enc)
	return dst
}

// Decompress decodes a zstd frame of at most max bytes into dst (reusing its capacity).
func (c *Codec) Decompress(dst, frame []byte, max int) ([]byte, error) {
	dec, _ := c.decs.Get().(*zstd.Decoder)
	if dec == nil {
		var err error
		dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(manifest.MaxChunkSize),
			zstd.WithDecoderMaxWindow(manifest.MaxChunkSize), zstd.IgnoreChecksum(true))
		if err != nil {
			panic(err)
		}
	}
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		c.decs.Put(dec)
		return nil, fmt.Errorf("bad zstd frame header: %v", err)
	}
	if h.HasFCS && h.FrameContentSize > uint64(max) {
		c.decs.Put(dec)
		return nil, fmt.Errorf("frame holds %d bytes, more than the %d of a chunk", h.FrameContentSize, max)
	}
	out, err := dec.DecodeAll(frame, dst[:0])
	c.decs.Put(dec)
	if err != nil {
		return nil, err
	}
	if len(out) > max {
		return nil, fmt.Errorf("decodes to %d bytes, more than the %d of a chunk", len(out), max)
	}
	return out, nil
}

// ChunkKey is the object key of a chunk: fanned out over 256 directories by its first byte.
func ChunkKey(id manifest.ID) string {
	s := id.String()
	return "chunks/" + s[:2] + "/" + s
}

func chunkWhat(id manifest.ID) string { return "chunk " + id.String() }

// HasChunk reports whether the store holds chunk id. It does not read or check the chunk: a
// chunk present under its name was checked when it was written, and reads check it again.
func (s *Store) HasChunk(ctx context.Context, id manifest.ID) (bool, error) {
	_, err := s.b.Stat(ctx, ChunkKey(id))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return false, err
}

// GetChunk returns chunk id's bytes, decompressed into buf (reusing its capacity) and checked
// against id with hash h. A chunk whose bytes do not match gives an *Error of kind ErrCorrupt that
// names it.
func (s *Store) GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	frame, err := s.b.Get(ctx, ChunkKey(id))
	if err != nil {
		return nil, err
	}
	return s.DecodeChunk(h, id, frame, buf)
}

// GetChunkRaw returns chunk id's stored (compressed) bytes after checking them.
func (s *Store) GetChunkRaw(ctx context.Context, h manifest.Hash, id manifest.ID) ([]byte, error) {
	frame, err := s.b.Get(ctx, ChunkKey(id))
	if err != nil {
		return nil, err
	}
	if _, err := s.DecodeChunk(h, id, frame, nil); err != nil {
		return nil, err
	}
	return frame, nil
}

// DecodeChunk decompresses a stored chunk frame and checks it against id.
func (s *Store) DecodeChunk(h manifest.Hash, id manifest.ID, frame, buf []byte) ([]byte, error) {
	data, err := s.codec.Decompress(buf, frame, manifest.MaxChunkSize)
	if err != nil {
		return nil, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: chunkWhat(id), Err: err}
	}
	if got := h.Sum(data); got != id {
		return nil, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: chunkWhat(id),
			Err: fmt.Errorf("content hashes to %s: %w", got.Short(), ErrHashMismatch)}
	}
	return data, nil
}

// ChunkWriter stores chunks. Chunks written through it are durable once Commit returns; on a
// backend without batching that is already true when Put returns.
type ChunkWriter struct {
	s     *Store
	batch Batch // nil: put directly
}

// NewChunkWriter returns a writer for a series of chunks, for example one import.
func (s *Store) NewChunkWriter() *ChunkWriter {
	w := &ChunkWriter{s: s}
	if b, ok := s.b.(Batcher); ok {
		w.batch = b.NewBatch()
	}
	return w
}

// Put compresses data and stores it as chunk id, returning the stored size. The caller has
// computed id from data with the image's hash.
func (w *ChunkWriter) Put(ctx context.Context, id manifest.ID, data []byte, scratch []byte) (int64, error) {
	frame := w.s.codec.Compress(scratch[:0], data)
	return int64(len(frame)), w.PutRaw(ctx, id, frame)
}

// PutRaw stores an already compressed and checked chunk frame.
func (w *ChunkWriter) PutRaw(ctx context.Context, id manifest.ID, frame []byte) error {
	if w.batch != nil {
		return w.batch.Put(ctx, ChunkKey(id), frame)
	}
	return w.s.b.Put(ctx, ChunkKey(id), frame)
}

// Commit makes every chunk put so far durable and visible.
func (w *ChunkWriter) Commit(ctx context.Context) error {
	if w.batch == nil {
		return nil
	}
	return w.batch.Commit(ctx)
}

// Abort drops chunks put since the last Commit that are not yet visible.
func (w *ChunkWriter) Abort() {
	if w.batch != nil {
		w.batch.Abort()
	}
}

// StatChunk returns the stored (compressed) size of chunk id, or an ErrNotFound error.
func (s *Store) StatChunk(ctx context.Context, id manifest.ID) (int64, error) {
	o, err := s.b.Stat(ctx, ChunkKey(id))
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			se.What = chunkWhat(id)
		}
		return 0, err
	}
	return o.Size, nil
}
