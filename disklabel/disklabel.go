// Package disklabel reads the partition table of a disk image (GPT or MBR) into the summary a
// manifest keeps, so admins can tell images apart without booting them.
//
//	pt, err := disklabel.Read(f, size) // nil, nil when the disk has no partition table
package disklabel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"

	"tms/manifest"
)

// Read returns the partition table of the disk behind r (size bytes), or nil if it has none
// that tms recognises. It reads at most the first few MiB. A table that is present but
// damaged is reported as nil: a summary is informative, never a reason to refuse an image.
func Read(r io.ReaderAt, size int64) (*manifest.PartitionTable, error) {
	for _, sector := range []int64{512, 4096} {
		pt, err := readGPT(r, size, sector)
		if err != nil {
			return nil, err
		}
		if pt != nil {
			return pt, nil
		}
	}
	return readMBR(r, size)
}

func readAt(r io.ReaderAt, off int64, n int, size int64) ([]byte, error) {
	if off < 0 || off+int64(n) > size {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	return b, nil
}

// GPT header fields (UEFI spec 2.10, table 5.21).
func readGPT(r io.ReaderAt, size, sector int64) (*manifest.PartitionTable, error) {
	h, err := readAt(r, sector, 92, size)
	if err != nil || h == nil || string(h[0:8]) != "EFI PART" {
		return nil, err
	}
	hdrSize := binary.LittleEndian.Uint32(h[12:])
	if hdrSize != 92 {
		return nil, nil
	}
	want := binary.LittleEndian.Uint32(h[16:])
	c := bytes.Clone(h)
	binary.LittleEndian.PutUint32(c[16:], 0)
	if crc32.ChecksumIEEE(c) != want {
		return nil, nil
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(h[72:]))
	count := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if count == 0 || count > 1024 || esize < 128 || esize > 1024 || esize%8 != 0 {
		return nil, nil
	}
	ents, err := readAt(r, entriesLBA*sector, int(count*esize), size)
	if err != nil || ents == nil {
		return nil, err
	}
	if crc32.ChecksumIEEE(ents) != binary.LittleEndian.Uint32(h[88:]) {
		return nil, nil
	}
	pt := &manifest.PartitionTable{Scheme: "gpt", Partitions: []manifest.Partition{}}
	for i := 0; i < int(count) && len(pt.Partitions) < 256; i++ {
		e := ents[i*int(esize):][:128]
		var typ [16]byte
		copy(typ[:], e[0:16])
		if typ == ([16]byte{}) {
			continue
		}
		first, last := int64(binary.LittleEndian.Uint64(e[32:])), int64(binary.LittleEndian.Uint64(e[40:]))
		if first < 0 || last < first || last > size/sector {
			continue
		}
		u16 := make([]uint16, 0, 36)
		for j := 56; j+1 < 128; j += 2 {
			v := binary.LittleEndian.Uint16(e[j:])
			if v == 0 {
				break
			}
			u16 = append(u16, v)
		}
		name := string(utf16.Decode(u16))
		if len(name) > 128 {
			name = name[:128]
		}
		pt.Partitions = append(pt.Partitions, manifest.Partition{
			Index: i + 1, Start: first * sector, Size: (last - first + 1) * sector,
			Type: gptTypeName(typ), Name: name,
		})
	}
	return pt, nil
}

// GUIDString formats a GPT GUID (mixed endian) the way tools print it.
func GUIDString(g [16]byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(g[0:]), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}

var gptTypes = map[string]string{
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
	"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery",
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
	"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
	"21686148-6449-6E6F-744E-656564454649": "BIOS boot",
}

func gptTypeName(g [16]byte) string {
	s := GUIDString(g)
	if n, ok := gptTypes[s]; ok {
		return n
	}
	return s
}

var mbrTypes = map[byte]string{
	0x01: "FAT12", 0x04: "FAT16", 0x05: "Extended", 0x06: "FAT16", 0x07: "NTFS/exFAT", 0x0b: "FAT32",
	0x0c: "FAT32 (LBA)", 0x0e: "FAT16 (LBA)", 0x0f: "Extended (LBA)", 0x27: "Windows recovery",
	0x82: "Linux swap", 0x83: "Linux", 0x8e: "Linux LVM", 0xee: "GPT protective", 0xef: "EFI System",
}

// MBR partition entries at offset 446, 16 bytes each; signature 0x55 0xAA at 510.
func readMBR(r io.ReaderAt, size int64) (*manifest.PartitionTable, error) {
	b, err := readAt(r, 0, 512, size)
	if err != nil || b == nil || b[510] != 0x55 || b[511] != 0xAA {
		return nil, err
	}
	pt := &manifest.PartitionTable{Scheme: "mbr", Partitions: []manifest.Partition{}}
	for i := 0; i < 4; i++ {
		e := b[446+16*i:][:16]
		if e[0] != 0 && e[0] != 0x80 {
			return nil, nil // not a partition table (a boot sector of a file system, say)
		}
		typ := e[4]
		start, n := int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0 || n == 0 {
			continue
		}
		name, ok := mbrTypes[typ]
		if !ok {
			name = fmt.Sprintf("0x%02x", typ)
		}
		pt.Partitions = append(pt.Partitions, manifest.Partition{Index: i + 1, Start: start * 512, Size: n * 512, Type: name, Bootable: e[0] == 0x80})
	}
	if len(pt.Partitions) == 0 {
		return nil, nil
	}
	return pt, nil
}
