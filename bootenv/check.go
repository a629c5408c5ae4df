package bootenv

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Bounds of CheckInitrd: what an initrd may unpack to and how many entries it may have.
const (
	maxInitrdUnpacked = 2 << 30
	maxInitrdEntries  = 1 << 16
	maxCPIOName       = 4096
)

// CheckInitrd checks that b is an initrd a terminal can boot: a gzip'd newc cpio archive
// (what Build writes) whose /init is a regular file holding a static ELF executable. It reads
// at most maxInitrdUnpacked bytes of it. tms dev's simulated terminals run it where a real PC
// would unpack the initrd and exec /init; a real kernel accepts more (other compressions,
// several concatenated archives), which Build never writes.
func CheckInitrd(b []byte) error {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("initrd: not gzip: %w", err)
	}
	zr.Multistream(false)
	r := &limited{r: zr, n: maxInitrdUnpacked}
	var initData []byte
	for n := 0; ; n++ {
		if n >= maxInitrdEntries {
			return fmt.Errorf("initrd: more than %d entries", maxInitrdEntries)
		}
		name, mode, data, err := readNewc(r)
		if err != nil {
			return fmt.Errorf("initrd: entry %d: %w", n, err)
		}
		if name == "TRAILER!!!" {
			break
		}
		if name == "init" || name == "./init" || name == "/init" {
			if mode&0o170000 != 0o100000 {
				return errors.New("initrd: /init is not a regular file")
			}
			if mode&0o111 == 0 {
				return errors.New("initrd: /init is not executable")
			}
			initData = data
		}
	}
	if initData == nil {
		return errors.New("initrd has no /init")
	}
	return CheckStaticELF(initData)
}

// CheckStaticELF checks that b is an ELF executable that needs no dynamic loader.
func CheckStaticELF(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("/init is not an ELF executable: %w", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("/init is an ELF %s, not an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("/init is dynamically linked: the in-memory OS has no loader for it")
		}
	}
	if f.Entry == 0 {
		return errors.New("/init has no entry point")
	}
	return nil
}

// limited reads at most n bytes and then fails (rather than ending quietly, like io.LimitReader).
type limited struct {
	r io.Reader
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("unpacks to more than %d bytes", int64(maxInitrdUnpacked))
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// readNewc reads one newc ("070701") record: its name, mode and data. Data of files other
// than init is discarded as it is read.
func readNewc(r io.Reader) (name string, mode uint32, data []byte, err error) {
	var h [110]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", 0, nil, fmt.Errorf("header: %w", err)
	}
	if string(h[:6]) != "070701" {
		return "", 0, nil, errors.New("not a newc cpio header")
	}
	field := func(i int) (uint32, error) {
		v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
		return uint32(v), err
	}
	mode, err1 := field(1)
	size, err2 := field(6)
	nameSize, err3 := field(11)
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", 0, nil, fmt.Errorf("header field: %w", err)
	}
	if nameSize == 0 || nameSize > maxCPIOName {
		return "", 0, nil, fmt.Errorf("name of %d bytes", nameSize)
	}
	nb := make([]byte, int(nameSize)+pad4(110+int(nameSize)))
	if _, err := io.ReadFull(r, nb); err != nil {
		return "", 0, nil, fmt.Errorf("name: %w", err)
	}
	name = string(bytes.TrimRight(nb[:nameSize], "\x00"))
	total := int64(size) + int64(pad4(int(size)))
	if name == "init" || name == "./init" || name == "/init" {
		if int64(size) > MaxInitrdSize {
			return "", 0, nil, fmt.Errorf("/init of %d bytes", size)
		}
		data = make([]byte, size)
		if _, err := io.ReadFull(r, data); err != nil {
			return "", 0, nil, fmt.Errorf("/init: %w", err)
		}
		total -= int64(size)
	}
	if _, err := io.CopyN(io.Discard, r, total); err != nil {
		return "", 0, nil, fmt.Errorf("%s: %w", clipString(name), err)
	}
	return name, mode, data, nil
}
