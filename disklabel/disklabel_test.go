package disklabel_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"tms/disklabel"
	"tms/internal/sampledisk"
)

func TestReadGPT(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d")
	if err := sampledisk.Write(p, sampledisk.Options{Size: 64 << 20, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(p)
	defer f.Close()
	pt, err := disklabel.Read(f, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if pt == nil || pt.Scheme != "gpt" || len(pt.Partitions) != 2 {
		t.Fatalf("got %+v", pt)
	}
	esp := pt.Partitions[0]
	if esp.Type != "EFI System" || esp.Name != "EFI system partition" || esp.Start != 1<<20 {
		t.Errorf("first partition %+v", esp)
	}
	if pt.Partitions[1].Type != "Microsoft basic data" {
		t.Errorf("second partition %+v", pt.Partitions[1])
	}
}

func TestReadMBR(t *testing.T) {
	b := make([]byte, 4096)
	e := b[446:]
	e[0], e[4] = 0x80, 0x07
	e[8], e[12], e[13] = 0x08, 0x00, 0x10 // start sector 8, 4096 sectors
	b[510], b[511] = 0x55, 0xaa
	pt, err := disklabel.Read(bytes.NewReader(b), int64(len(b)))
	if err != nil || pt == nil || pt.Scheme != "mbr" || len(pt.Partitions) != 1 {
		t.Fatalf("got %+v, %v", pt, err)
	}
	if p := pt.Partitions[0]; p.Type != "NTFS/exFAT" || !p.Bootable || p.Start != 8*512 || p.Size != 4096*512 {
		t.Errorf("partition %+v", p)
	}
}

func TestNoTable(t *testing.T) {
	for _, b := range [][]byte{make([]byte, 1<<20), make([]byte, 10)} {
		pt, err := disklabel.Read(bytes.NewReader(b), int64(len(b)))
		if pt != nil || err != nil {
			t.Errorf("blank disk of %d bytes: %+v, %v", len(b), pt, err)
		}
	}
}

// FuzzRead feeds arbitrary first sectors: a captured disk is whatever the terminal held.
func FuzzRead(f *testing.F) {
	p := filepath.Join(f.TempDir(), "d")
	sampledisk.Write(p, sampledisk.Options{Size: 4 << 20, Seed: 2})
	b, _ := os.ReadFile(p)
	f.Add(b[:64<<10])
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, err := disklabel.Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if pt != nil {
			for _, p := range pt.Partitions {
				if p.Start < 0 || p.Size < 0 || p.Start+p.Size > int64(len(b))+int64(1)<<41 {
					t.Fatalf("partition out of range: %+v", p)
				}
			}
		}
	})
}
