package manifest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// canonicalWithChunks writes the canonical encoding of a manifest whose header says diskSize at
// the smallest chunk size and whose chunk list holds ids non-zero ids, without building it in
// memory first.
func canonicalWithChunks(t testing.TB, diskSize int64, ids int) []byte {
	t.Helper()
	m := &Manifest{Format: Format, Hash: BLAKE3, ChunkSize: MinChunkSize, DiskSize: diskSize,
		Meta: Meta{Name: "token-holder", Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}}
	head, err := encode(m)
	if err != nil {
		t.Fatal(err)
	}
	head = head[:bytes.LastIndex(head, []byte(`,"chunks":`))]
	var b bytes.Buffer
	b.Grow(len(head) + ids*maxIDEncoded + 16)
	b.Write(head)
	b.WriteString(chunksField)
	var id ID
	var digits [2 * IDLen]byte
	for i := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		id[0], id[1], id[2], id[31] = byte(i), byte(i>>8), byte(i>>16), 1
		hex.Encode(digits[:], id[:])
		b.WriteByte('"')
		b.Write(digits[:])
		b.WriteByte('"')
	}
	b.WriteString("]}")
	return b.Bytes()
}

// zeroIDs replaces the chunk list of manifest b by n zero chunks.
func zeroIDs(b []byte, n int) []byte {
	head := b[:bytes.LastIndex(b, []byte(chunksField))+len(chunksField)]
	return append(append(bytes.Clone(head), strings.Repeat(`"",`, n-1)...), `""]}`...)
}

// allocated returns the bytes fn allocates on the heap.
func allocated(fn func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A 134 MiB manifest (2^21 chunks of 64 KiB: a 128 GiB disk) used to cost 2045 MiB of
// allocations (605 MiB live at the end) in encoding/json; it now costs its chunk ids.
func TestDecodeHeapIsItsChunkIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 134 MiB manifest")
	}
	const n = 1 << 21
	b := canonicalWithChunks(t, n*MinChunkSize, n)
	var m *Manifest
	var err error
	got := allocated(func() { m, err = Decode(b) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Decode of %.1f MiB with %d chunks allocated %.1f MiB", float64(len(b))/(1<<20), n, float64(got)/(1<<20))
	if want := uint64(n*IDLen + 1<<20); got > want {
		t.Errorf("Decode allocated %d bytes, more than the %d of its chunk ids and a little", got, want)
	}
	if len(m.Chunks) != n || m.Chunks[n-1][0] != 0xff {
		t.Fatalf("decoded %d chunks", len(m.Chunks))
	}

	// The same chunk list under a header that says 1 GiB is refused before any id is decoded.
	lie := canonicalWithChunks(t, 1<<30, n)
	got = allocated(func() { _, err = Decode(lie) })
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("Decode of a chunk list longer than its disk = %v", err)
	}
	t.Logf("refusing it allocated %.1f KiB", float64(got)/(1<<10))
	if got > 1<<20 {
		t.Errorf("refusing a manifest that lies about its size allocated %d bytes", got)
	}
}

// A few hundred bytes that claim 64 TiB (2^24 chunks) must not make a 512 MiB slice of ids.
func TestShortListForAHugeDiskAllocatesLittle(t *testing.T) {
	b := canonicalWithChunks(t, MaxDiskSize, 3)
	b = bytes.Replace(b, []byte(`"chunk_size":65536`), []byte(`"chunk_size":4194304`), 1)
	var err error
	got := allocated(func() { _, err = Decode(b) })
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "shorter than") {
		t.Fatalf("Decode of a short list for a huge disk = %v", err)
	}
	if got > 1<<20 {
		t.Errorf("refusing %d bytes allocated %d bytes", len(b), got)
	}
}

func TestDecodeForDisk(t *testing.T) {
	good := canonicalWithChunks(t, 100*MinChunkSize, 100)
	for _, c := range []struct {
		name string
		in   []byte
		disk int64
		want string // "" for success
	}{
		{"fits its disk", good, 100 * MinChunkSize, ""},
		{"fits a larger disk", good, 1 << 40, ""},
		{"larger than the terminal's disk", good, 99 * MinChunkSize, "larger than the"},
		{"more bytes than any manifest for the disk", append(bytes.Repeat([]byte(" "), MaxHeaderSize), good...), 100 * MinChunkSize, "may have"},
		{"too many ids for its own disk size", canonicalWithChunks(t, 10*MinChunkSize, 100), 1 << 40, "longer than"},
		{"too few ids", canonicalWithChunks(t, 100*MinChunkSize, 99), 1 << 40, "99 chunk ids, want 100"},
		{"one id too many, within the length bound", zeroIDs(good, 101), 1 << 40, "more than the 100"},
		{"no chunk list", []byte(`{"format":"tms.image.v1"}`), 1 << 40, "no chunk list"},
		{"a second chunk list", bytes.Replace(good, []byte(`"format"`), []byte(`"chunks":[],"format"`), 1), 1 << 40, "more than one chunk list"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := DecodeForDisk(c.in, c.disk)
			if c.want == "" {
				if err != nil || len(m.Chunks) != 100 {
					t.Fatalf("DecodeForDisk = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("DecodeForDisk = %v; want an error saying %q", err, c.want)
			}
		})
	}
}

// MaxEncodedSizeFor is an upper bound for the largest manifest there can be for a disk: the
// smallest chunks, no zero chunk, and the longest metadata Validate allows, escaped.
func TestMaxEncodedSizeForBoundsTheLargestManifest(t *testing.T) {
	for _, disk := range []int64{1, MinChunkSize, 3*MinChunkSize + 1, 64 << 20} {
		t.Run(fmt.Sprint(disk), func(t *testing.T) {
			m := &Manifest{Format: Format, Hash: SHA256, ChunkSize: MinChunkSize, DiskSize: disk,
				Meta: Meta{Name: strings.Repeat("n", 128), Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
					Source: strings.Repeat("\x01", 1024), Partitions: &PartitionTable{Scheme: "gpt"}}}
			m.Parent[0] = 1
			for i := range 256 {
				m.Meta.Partitions.Partitions = append(m.Meta.Partitions.Partitions, Partition{Index: i, Start: 1 << 62, Size: 1 << 62,
					Type: strings.Repeat("\x02", 64), Name: strings.Repeat("\x03", 128), Bootable: true})
			}
			for i := range NumChunks(disk, MinChunkSize) {
				m.Chunks = append(m.Chunks, SHA256.Sum([]byte(fmt.Sprint(i))))
			}
			if err := m.Validate(); err != nil {
				if strings.Contains(err.Error(), "meta.name") {
					m.Meta.Name = "n"
				} else {
					t.Fatal(err)
				}
			}
			b, err := Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			if limit := MaxEncodedSizeFor(disk); int64(len(b)) > limit {
				t.Fatalf("a %d byte manifest for a disk of %d bytes is over the bound %d", len(b), disk, limit)
			}
			if _, err := DecodeForDisk(b, disk); err != nil {
				t.Fatalf("the largest manifest for its disk is refused: %v", err)
			}
		})
	}
	if MaxEncodedSizeFor(MaxDiskSize) != MaxEncodedSize {
		t.Errorf("MaxEncodedSizeFor(MaxDiskSize) = %d, not MaxEncodedSize %d", MaxEncodedSizeFor(MaxDiskSize), MaxEncodedSize)
	}
}
