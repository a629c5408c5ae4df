// Package sampledisk makes deterministic disk images that look like classroom disks to the image
// store: a GPT partition table, then runs of random bytes (compressed files, binaries), text-like
// bytes (documents, configuration) and zeros (free space). tms dev, the tests and the benchmarks
// use it.
//
//	err := sampledisk.Write("disk.raw", sampledisk.Options{Size: 1 << 30, Seed: 1})
//	blocks, err := sampledisk.Mutate("disk.raw", 0.01, 2) // change 1% of 4 KiB blocks
package sampledisk

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"unicode/utf16"
)

// BlockSize is the unit Mutate changes: a file system block.
const BlockSize = 4096

// Options describe a sample disk.
type Options struct {
	Size int64  // bytes; at least 4 MiB, a multiple of 4 KiB
	Seed uint64 // same seed, same bytes
	// Mix sets the share of random, text-like and zero bytes (they need not add up to one);
	// zero value: 40% random, 35% text, 25% zero.
	Random, Text, Zero float64
}

// Write creates (or replaces) a sparse file at path with the sample disk.
func Write(path string, o Options) error {
	if o.Size < 4<<20 || o.Size%BlockSize != 0 {
		return fmt.Errorf("sample disk size %d: want at least 4 MiB and a multiple of 4 KiB", o.Size)
	}
	if o.Random == 0 && o.Text == 0 && o.Zero == 0 {
		o.Random, o.Text, o.Zero = 0.40, 0.35, 0.25
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(o.Size); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x746d73))
	const dataStart = 1 << 20
	if _, err := f.WriteAt(gpt(o.Size, rng), 0); err != nil {
		return err
	}
	buf := make([]byte, 8<<20)
	total := o.Random + o.Text + o.Zero
	for off := int64(dataStart); off < o.Size; {
		n := int64(16+rng.IntN(2033)) * BlockSize // 64 KiB to 8 MiB
		n = min(n, o.Size-off)
		p := rng.Float64() * total
		seg := buf[:n]
		switch {
		case p < o.Random:
			fillRandom(seg, rng)
		case p < o.Random+o.Text:
			fillText(seg, rng)
		default:
			off += n
			continue // zeros: leave a hole
		}
		if _, err := f.WriteAt(seg, off); err != nil {
			return err
		}
		off += n
	}
	return f.Sync()
}

func fillRandom(b []byte, rng *rand.Rand) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	for ; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}

var words = []string{"the", "lab", "student", "teacher", "class", "printer", "login", "windows", "update",
	"config", "school", "exam", "network", "user", "profile", "desktop", "document", "report", "lesson",
	"chapter", "math", "science", "history", "language", "art", "music", "install", "driver", "service",
	"registry", "value", "key", "path", "system32", "program", "files", "temp", "cache", "log", "error",
	"warning", "info", "debug", "version", "1.0", "2.3.4", "true", "false", "=", ";", "{", "}", "<p>", "</p>"}

// fillText writes lines of words: compressible like documents and logs, but not repeating, so
// chunks of it do not deduplicate against each other.
func fillText(b []byte, rng *rand.Rand) {
	i := 0
	for i < len(b) {
		w := words[rng.IntN(len(words))]
		if rng.IntN(7) == 0 {
			w = fmt.Sprint(rng.IntN(100000))
		}
		i += copy(b[i:], w)
		if i < len(b) {
			if rng.IntN(12) == 0 {
				b[i] = '\n'
			} else {
				b[i] = ' '
			}
			i++
		}
	}
}

// gpt returns the first MiB of the disk: a protective MBR, a GPT header and two partitions, an
// EFI system partition and a basic data partition over the rest of the disk. The backup GPT at
// the end of the disk is left out: tms reads the primary one.
func gpt(size int64, rng *rand.Rand) []byte {
	b := make([]byte, 1<<20)
	sectors := uint64(size / 512)
	// Protective MBR: one partition of type 0xEE over the disk.
	e := b[446:]
	e[4] = 0xee
	binary.LittleEndian.PutUint32(e[8:], 1)
	binary.LittleEndian.PutUint32(e[12:], uint32(min(sectors-1, 0xffffffff)))
	b[510], b[511] = 0x55, 0xaa

	ents := b[1024 : 1024+128*128]
	esp := guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
	data := guid("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
	espEnd := uint64(2048 + min(200<<11, int64(sectors)/4)) // up to 100 MiB
	entry(ents[0:], esp, rng, 2048, espEnd-1, "EFI system partition")
	entry(ents[128:], data, rng, espEnd, sectors-34, "Basic data partition")

	h := b[512:]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x00010000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], 1)          // this header
	binary.LittleEndian.PutUint64(h[32:], sectors-1)  // backup header
	binary.LittleEndian.PutUint64(h[40:], 34)         // first usable
	binary.LittleEndian.PutUint64(h[48:], sectors-34) // last usable
	fillRandom(h[56:72], rng)                         // disk GUID
	binary.LittleEndian.PutUint64(h[72:], 2)          // entries start
	binary.LittleEndian.PutUint32(h[80:], 128)        // entry count
	binary.LittleEndian.PutUint32(h[84:], 128)        // entry size
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(ents))
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	return b
}

func entry(e []byte, typ [16]byte, rng *rand.Rand, first, last uint64, name string) {
	copy(e[0:], typ[:])
	fillRandom(e[16:32], rng)
	binary.LittleEndian.PutUint64(e[32:], first)
	binary.LittleEndian.PutUint64(e[40:], last)
	for i, r := range utf16.Encode([]rune(name)) {
		binary.LittleEndian.PutUint16(e[56+2*i:], r)
	}
}

func guid(s string) [16]byte {
	var g [16]byte
	var a uint32
	var b, c uint16
	var d [8]byte
	fmt.Sscanf(s, "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", &a, &b, &c, &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7])
	binary.LittleEndian.PutUint32(g[0:], a)
	binary.LittleEndian.PutUint16(g[4:], b)
	binary.LittleEndian.PutUint16(g[6:], c)
	copy(g[8:], d[:])
	return g
}

// Mutate overwrites a fraction of the 4 KiB blocks of the file at path, chosen at random past
// the partition table, with random bytes, and returns the offsets it changed.
func Mutate(path string, fraction float64, seed uint64) ([]int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	nblocks := fi.Size() / BlockSize
	first := int64(1<<20) / BlockSize
	if nblocks <= first {
		return nil, fmt.Errorf("%s is too small to mutate", path)
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d7574))
	count := int(float64(nblocks) * fraction)
	seen := map[int64]bool{}
	var offs []int64
	blk := make([]byte, BlockSize)
	for len(offs) < count {
		n := first + rng.Int64N(nblocks-first)
		if seen[n] {
			continue
		}
		seen[n] = true
		fillRandom(blk, rng)
		if _, err := f.WriteAt(blk, n*BlockSize); err != nil {
			return nil, err
		}
		offs = append(offs, n*BlockSize)
	}
	return offs, f.Sync()
}
