// Package manifest defines the tms disk image format: a manifest that lists a disk's fixed-size
// chunks by content hash, and the references (NAME, NAME:TAG, NAME@VERSIONID) people use for it.
//
// A manifest has exactly one byte encoding (canonical JSON, see Encode), and a version's id is the
// hash of those bytes, so versions form a hash chain through their Parent field:
//
//	m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, ...}
//	b, err := manifest.Encode(m) // validates, then encodes canonically
//	id := m.Hash.Sum(b)          // the version id
//	m2, err := manifest.Decode(b) // strict: rejects anything Encode would not write
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Format is the value of the format field of every manifest this version of tms writes.
const Format = "tms.image.v1"

// Limits on what a manifest may describe. They keep a hostile manifest from asking for absurd
// amounts of memory while leaving room for any real classroom disk.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
	MaxDiskSize  = 64 << 40 // 64 TiB
	MaxChunks    = 1 << 24
	// MaxEncodedSize bounds the bytes Decode accepts: MaxChunks ids plus generous metadata
	// (MaxEncodedSizeFor(MaxDiskSize)).
	MaxEncodedSize = MaxHeaderSize + 11 + MaxChunks*maxIDEncoded + 2 // 11 for chunksField, 2 for "]}"
)

// Manifest describes one version of a disk image.
type Manifest struct {
	Format    string `json:"format"`
	Hash      Hash   `json:"hash"`
	DiskSize  int64  `json:"disk_size"`
	ChunkSize int64  `json:"chunk_size"`
	// Parent is the version this one was made from (the previous version of the same tag), or
	// the zero ID for a first version.
	Parent ID   `json:"parent"`
	Meta   Meta `json:"meta"`
	// Chunks holds one id per chunk-sized, chunk-aligned range of the disk, in disk order; the
	// zero ID marks a range that is all zero bytes and is not stored.
	Chunks []ID `json:"chunks"`
}

// Meta is what people want to know about a version; it is part of the version's identity.
type Meta struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Source says where the disk came from: a terminal, or a file on the importing host.
	Source string `json:"source,omitempty"`
	// Partitions summarises the disk's partition table, if one was recognised.
	Partitions *PartitionTable `json:"partitions,omitempty"`
}

// PartitionTable is a summary of a disk's partition table.
type PartitionTable struct {
	Scheme     string      `json:"scheme"` // "gpt" or "mbr"
	Partitions []Partition `json:"partitions"`
}

// Partition is one entry of a partition table, with offsets in bytes.
type Partition struct {
	Index    int    `json:"index"`
	Start    int64  `json:"start"`
	Size     int64  `json:"size"`
	Type     string `json:"type"`
	Name     string `json:"name,omitempty"`
	Bootable bool   `json:"bootable,omitempty"`
}

// NumChunks is the number of chunks a disk of diskSize bytes has at chunkSize.
func NumChunks(diskSize, chunkSize int64) int64 {
	return (diskSize + chunkSize - 1) / chunkSize
}

// ChunkRange returns the byte offset and length of chunk i.
func (m *Manifest) ChunkRange(i int) (off, n int64) {
	off = int64(i) * m.ChunkSize
	n = m.ChunkSize
	if off+n > m.DiskSize {
		n = m.DiskSize - off
	}
	return off, n
}

// ErrInvalid marks every error about a manifest's content; errors.Is(err, ErrInvalid) holds for
// whatever Validate and Decode return.
var ErrInvalid = errors.New("invalid manifest")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks that m is a manifest tms can use.
func (m *Manifest) Validate() error {
	if err := m.validateSizes(); err != nil {
		return err
	}
	if n := NumChunks(m.DiskSize, m.ChunkSize); int64(len(m.Chunks)) != n {
		return invalid("%d chunk ids for a disk of %d bytes in chunks of %d, want %d", len(m.Chunks), m.DiskSize, m.ChunkSize, n)
	}
	return m.validateMeta()
}

// validateSizes checks the fields before the chunk list that say how long it is.
func (m *Manifest) validateSizes() error {
	if m.Format != Format {
		return invalid("format %q is not %q", clip(m.Format), Format)
	}
	if !m.Hash.Valid() {
		return invalid("hash %q is not one of %q, %q", clip(string(m.Hash)), BLAKE3, SHA256)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize&(m.ChunkSize-1) != 0 {
		return invalid("chunk size %d is not a power of two between %d and %d", m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if m.DiskSize <= 0 || m.DiskSize > MaxDiskSize {
		return invalid("disk size %d is not between 1 and %d bytes", m.DiskSize, int64(MaxDiskSize))
	}
	if n := NumChunks(m.DiskSize, m.ChunkSize); n > MaxChunks {
		return invalid("disk size %d at chunk size %d needs %d chunks, more than %d", m.DiskSize, m.ChunkSize, n, MaxChunks)
	}
	return nil
}

func (m *Manifest) validateMeta() error {
	if err := ValidateName(m.Meta.Name); err != nil {
		return invalid("meta.name: %v", err)
	}
	if m.Meta.Created.IsZero() {
		return invalid("meta.created is missing")
	}
	if m.Meta.Created.Location() != time.UTC || m.Meta.Created.Nanosecond() != 0 {
		return invalid("meta.created %s is not a UTC time in whole seconds", m.Meta.Created)
	}
	if len(m.Meta.Source) > 1024 {
		return invalid("meta.source is longer than 1024 bytes")
	}
	if pt := m.Meta.Partitions; pt != nil {
		if pt.Scheme != "gpt" && pt.Scheme != "mbr" {
			return invalid("meta.partitions.scheme %q is not gpt or mbr", clip(pt.Scheme))
		}
		if len(pt.Partitions) > 256 {
			return invalid("meta.partitions has %d entries, more than 256", len(pt.Partitions))
		}
		for i, p := range pt.Partitions {
			if p.Start < 0 || p.Size < 0 || len(p.Type) > 64 || len(p.Name) > 128 {
				return invalid("meta.partitions[%d] is out of range", i)
			}
		}
	}
	return nil
}

// Encode validates m and returns its canonical encoding: compact JSON with fields in the order of
// the struct definitions, no HTML escaping and no trailing newline.
func Encode(m *Manifest) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return encode(m)
}

func encode(m *Manifest) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(m.Chunks)*(2*IDLen+3) + 512)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Decode parses a manifest and checks that b is exactly its canonical encoding, so that the hash
// of b is the version id of the manifest returned. Errors wrap ErrInvalid.
//
// It reads the metadata first and refuses, before decoding a single chunk id, a chunk list longer
// or shorter than the disk size and chunk size it states allow; the ids are then parsed straight
// into a slice of exactly that many, so a manifest costs its chunk count times IDLen bytes of
// memory: half its size for real ids, at most 11 times its size for a list of zero chunks.
func Decode(b []byte) (*Manifest, error) {
	return DecodeForDisk(b, MaxDiskSize)
}

// Bounds of the canonical encoding.
const (
	// MaxHeaderSize bounds the encoding of everything but the chunk list: a name, a source of
	// 1024 bytes and 256 partition entries fit many times over, even with every byte escaped.
	MaxHeaderSize = 1 << 20
	// maxIDEncoded is the most bytes one chunk id takes in the chunk list: quotes, digits, comma.
	maxIDEncoded = 2*IDLen + 3
	// chunksField starts the chunk list, the last field of a canonical encoding. A JSON string
	// cannot hold it (its quotes would be escaped), so its last occurrence is the chunk list's.
	chunksField = `,"chunks":[`
)

// MaxEncodedSizeFor returns the largest encoded size a manifest for a disk of diskSize bytes can
// have (at the smallest chunk size), so a reader can cap a body before reading it: a region caps a
// terminal's upload by the terminal's disk size.
func MaxEncodedSizeFor(diskSize int64) int64 {
	diskSize = min(max(diskSize, 0), MaxDiskSize)
	n := min(NumChunks(diskSize, MinChunkSize), MaxChunks)
	return MaxHeaderSize + int64(len(chunksField)) + n*maxIDEncoded + int64(len("]}"))
}

// DecodeForDisk is Decode for a manifest that must fit a disk of diskSize bytes: it refuses one
// larger than MaxEncodedSizeFor(diskSize) before parsing anything, and one whose disk size is
// larger than diskSize before decoding its chunk list.
func DecodeForDisk(b []byte, diskSize int64) (*Manifest, error) {
	if limit := MaxEncodedSizeFor(diskSize); int64(len(b)) > limit {
		return nil, invalid("%d bytes, more than the %d a manifest for a disk of %d bytes may have", len(b), limit, diskSize)
	}
	i := bytes.LastIndex(b, []byte(chunksField))
	if i < 0 {
		return nil, invalid("no chunk list at the end: %s", decodeHint(b))
	}
	if i > MaxHeaderSize {
		return nil, invalid("%d bytes before the chunk list, more than %d", i, MaxHeaderSize)
	}
	m, err := decodeHeader(b[:i])
	if err != nil {
		return nil, err
	}
	if m.DiskSize > diskSize {
		return nil, invalid("disk size %d is larger than the %d bytes of the disk it is for", m.DiskSize, diskSize)
	}
	n := NumChunks(m.DiskSize, m.ChunkSize)
	list, ok := bytes.CutSuffix(b[i+len(chunksField):], []byte("]}"))
	if !ok {
		return nil, invalid("not in canonical form: trailing data after the chunk list")
	}
	// Both bounds before the ids are allocated: a short list must not make a large slice.
	if maxLen := n*maxIDEncoded - 1; int64(len(list)) > maxLen {
		return nil, invalid("chunk list of %d bytes is longer than the %d that %d chunks (disk size %d, chunk size %d) can take",
			len(list), maxLen, n, m.DiskSize, m.ChunkSize)
	}
	if minLen := n*int64(len(`"",`)) - 1; int64(len(list)) < minLen {
		return nil, invalid("chunk list of %d bytes is shorter than the %d that %d chunks (disk size %d, chunk size %d) take at least",
			len(list), minLen, n, m.DiskSize, m.ChunkSize)
	}
	if m.Chunks, err = parseChunkList(list, n); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeHint says why input without a chunk list is not a manifest, the way a full decode would.
func decodeHint(b []byte) string {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b[:min(len(b), MaxHeaderSize)]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil && len(b) <= MaxHeaderSize {
		return err.Error()
	}
	if err := m.Validate(); err != nil && len(b) <= MaxHeaderSize {
		return strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")
	}
	return "not in canonical form"
}

// decodeHeader decodes everything before the chunk list, strictly, checks that it is canonical
// and that its sizes are valid.
func decodeHeader(h []byte) (*Manifest, error) {
	obj := make([]byte, len(h)+1)
	copy(obj, h)
	obj[len(h)] = '}'
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, invalid("%v", err)
	}
	if dec.More() {
		return nil, invalid("trailing data after the manifest")
	}
	if m.Chunks != nil {
		return nil, invalid("more than one chunk list")
	}
	if err := m.validateSizes(); err != nil {
		return nil, err
	}
	canon, err := encode(&m)
	if err != nil {
		return nil, err
	}
	if j := bytes.LastIndex(canon, []byte(`,"chunks":`)); j < 0 || !bytes.Equal(canon[:j], h) {
		return nil, invalid("not in canonical form (was it edited by hand?)")
	}
	return &m, nil
}

// parseChunkList parses exactly n canonical ids: "64 lowercase hex digits" or "" for a zero
// chunk, separated by commas.
func parseChunkList(list []byte, n int64) ([]ID, error) {
	ids := make([]ID, n)
	p := 0
	for k := range ids {
		if p == len(list) {
			return nil, invalid("%d chunk ids, want %d for the disk size and chunk size", k, n)
		}
		if k > 0 {
			if list[p] != ',' {
				return nil, invalid("chunk list: want ',' after id %d at byte %d", k-1, p)
			}
			p++
		}
		if p >= len(list) || list[p] != '"' {
			return nil, invalid("chunk list: want '\"' at byte %d", p)
		}
		p++
		if p < len(list) && list[p] == '"' {
			p++ // a zero chunk
			continue
		}
		if end := p + 2*IDLen; end >= len(list) || list[end] != '"' {
			return nil, invalid("chunk list: id %d is not %d hex digits in quotes", k, 2*IDLen)
		}
		for j := range IDLen {
			hi, ok1 := unhex(list[p+2*j])
			lo, ok2 := unhex(list[p+2*j+1])
			if !ok1 || !ok2 {
				return nil, invalid("chunk list: id %d has a character that is not a lowercase hex digit", k)
			}
			ids[k][j] = hi<<4 | lo
		}
		if ids[k].IsZero() {
			return nil, invalid("chunk list: id %d is the reserved all-zero id (a zero chunk is \"\")", k)
		}
		p += 2*IDLen + 1
	}
	if p != len(list) {
		return nil, invalid("more than the %d chunk ids the disk size and chunk size allow", n)
	}
	return ids, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// VersionID returns the id of the version that encoded manifest b describes.
func VersionID(h Hash, b []byte) ID { return h.Sum(b) }
