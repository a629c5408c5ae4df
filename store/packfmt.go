package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"tms/manifest"
)

// A pack holds many chunk frames in one file, so that a directory store pays for one file per
// commit instead of one per chunk. Its layout (integers little-endian):
//
//	header   "TMSPACK1"
//	frames   the chunks' zstd frames, one after another, exactly as a chunk file would hold them
//	index    one 48-byte entry per frame, in file order:
//	           chunk id (32) | offset (8) | length (4) | CRC-32C of the frame (4)
//	trailer  32 bytes: index offset (8) | entries (4) | CRC-32C of the index (4)
//	           | CRC-32C of the 16 bytes before it (4) | zero (4) | "TMSPEND1"
//
// The frames are contiguous: the first starts right after the header, each next one where the
// one before it ends, and the last ends where the index starts. A pack is written whole under
// tmp/, made durable and only then renamed to packs/<name>.pack, so a pack under its name
// always holds its index and every frame the index names.
const (
	packDir          = "packs"
	packPrefix       = packDir + "/"
	packSuffix       = ".pack"
	packMagic        = "TMSPACK1"
	packTrailerMagic = "TMSPEND1"
	packHeaderSize   = len(packMagic)
	packEntrySize    = manifest.IDLen + 8 + 4 + 4
	packTrailerSize  = 32
	// maxPackFrame is the largest frame a pack may hold: a chunk of the largest size that
	// does not compress, with zstd's framing.
	maxPackFrame = manifest.MaxChunkSize + manifest.MaxChunkSize/64 + 1024
	// maxPackEntries bounds what an index may claim (and so what a reader allocates for it):
	// 48 MiB of index at most.
	maxPackEntries = 1 << 20
	// packRotateSize is the size past which a writer starts another pack in the same batch
	// (as it does at maxPackEntries frames).
	packRotateSize = 1 << 30
)

// castagnoli is the CRC-32C table (read-only after init; the CPU computes it where it can).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func frameCRC(frame []byte) uint32 { return crc32.Checksum(frame, castagnoli) }

// packEntry locates one chunk frame in a pack.
type packEntry struct {
	id  manifest.ID
	off int64
	n   uint32
	crc uint32
}

// errPackFormat marks a pack whose bytes are not a pack's.
var errPackFormat = errors.New("not a well-formed pack")

// parsePackTrailer checks the last packTrailerSize bytes of a pack of size bytes and returns
// where its index starts and how many entries it has.
func parsePackTrailer(t []byte, size int64) (indexOff int64, count int, indexCRC uint32, err error) {
	if len(t) != packTrailerSize {
		return 0, 0, 0, fmt.Errorf("%w: trailer of %d bytes", errPackFormat, len(t))
	}
	if string(t[24:]) != packTrailerMagic {
		return 0, 0, 0, fmt.Errorf("%w: no trailer (truncated or not a pack)", errPackFormat)
	}
	if binary.LittleEndian.Uint32(t[20:24]) != 0 {
		return 0, 0, 0, fmt.Errorf("%w: trailer padding is not zero", errPackFormat)
	}
	if got, want := crc32.Checksum(t[:16], castagnoli), binary.LittleEndian.Uint32(t[16:20]); got != want {
		return 0, 0, 0, fmt.Errorf("%w: trailer checksum %08x, want %08x", errPackFormat, got, want)
	}
	off := binary.LittleEndian.Uint64(t[0:8])
	n := binary.LittleEndian.Uint32(t[8:12])
	if n == 0 || n > maxPackEntries {
		return 0, 0, 0, fmt.Errorf("%w: %d index entries (1 to %d)", errPackFormat, n, maxPackEntries)
	}
	if size < int64(packHeaderSize+packTrailerSize) || off < uint64(packHeaderSize) ||
		off != uint64(size)-uint64(packTrailerSize)-uint64(n)*packEntrySize {
		return 0, 0, 0, fmt.Errorf("%w: index of %d entries at %d does not fit a %d-byte pack", errPackFormat, n, off, size)
	}
	return int64(off), int(n), binary.LittleEndian.Uint32(t[12:16]), nil
}

// parsePackIndex decodes an index of count entries that starts at indexOff, checking its CRC
// and that its frames tile the pack from the header to the index.
func parsePackIndex(b []byte, count int, indexOff int64, indexCRC uint32) ([]packEntry, error) {
	if len(b) != count*packEntrySize {
		return nil, fmt.Errorf("%w: index of %d bytes for %d entries", errPackFormat, len(b), count)
	}
	if got := crc32.Checksum(b, castagnoli); got != indexCRC {
		return nil, fmt.Errorf("%w: index checksum %08x, want %08x", errPackFormat, got, indexCRC)
	}
	entries := make([]packEntry, count)
	next := int64(packHeaderSize)
	for i := range entries {
		e := b[i*packEntrySize : (i+1)*packEntrySize]
		var pe packEntry
		copy(pe.id[:], e[:manifest.IDLen])
		off := binary.LittleEndian.Uint64(e[32:40])
		pe.n = binary.LittleEndian.Uint32(e[40:44])
		pe.crc = binary.LittleEndian.Uint32(e[44:48])
		if pe.id.IsZero() {
			return nil, fmt.Errorf("%w: entry %d names the zero chunk", errPackFormat, i)
		}
		if off != uint64(next) || pe.n == 0 || pe.n > maxPackFrame {
			return nil, fmt.Errorf("%w: entry %d (chunk %s): frame of %d bytes at %d, want one of 1 to %d bytes at %d",
				errPackFormat, i, pe.id.Short(), pe.n, off, maxPackFrame, next)
		}
		pe.off = int64(off)
		next += int64(pe.n)
		if next > indexOff {
			return nil, fmt.Errorf("%w: entry %d (chunk %s) runs past the index", errPackFormat, i, pe.id.Short())
		}
		entries[i] = pe
	}
	if next != indexOff {
		return nil, fmt.Errorf("%w: frames end at %d, index starts at %d", errPackFormat, next, indexOff)
	}
	return entries, nil
}

// parsePack checks a whole pack held in memory and returns its index; each frame is checked
// against its CRC too. The directory store reads only the header, trailer and index of a pack
// (see loadPackIndex) and checks a frame when it reads it; this is the same parser over bytes,
// for verification and fuzzing.
func parsePack(b []byte) ([]packEntry, error) {
	size := int64(len(b))
	if size < int64(packHeaderSize+packTrailerSize) || !bytes.Equal(b[:packHeaderSize], []byte(packMagic)) {
		return nil, fmt.Errorf("%w: no pack header (truncated or not a pack)", errPackFormat)
	}
	off, n, crc, err := parsePackTrailer(b[size-packTrailerSize:], size)
	if err != nil {
		return nil, err
	}
	entries, err := parsePackIndex(b[off:size-packTrailerSize], n, off, crc)
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		if got := frameCRC(b[e.off : e.off+int64(e.n)]); got != e.crc {
			return nil, fmt.Errorf("%w: entry %d (chunk %s): frame checksum %08x, want %08x", errPackFormat, i, e.id.Short(), got, e.crc)
		}
	}
	return entries, nil
}

// appendPackIndex appends the index and trailer for entries, whose frames end at indexOff.
func appendPackIndex(dst []byte, entries []packEntry, indexOff int64) []byte {
	start := len(dst)
	for _, e := range entries {
		dst = append(dst, e.id[:]...)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(e.off))
		dst = binary.LittleEndian.AppendUint32(dst, e.n)
		dst = binary.LittleEndian.AppendUint32(dst, e.crc)
	}
	indexCRC := crc32.Checksum(dst[start:], castagnoli)
	t := len(dst)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(indexOff))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(entries)))
	dst = binary.LittleEndian.AppendUint32(dst, indexCRC)
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[t:], castagnoli))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	return append(dst, packTrailerMagic...)
}
