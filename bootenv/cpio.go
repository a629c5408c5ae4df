package bootenv

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// An archive is the content of an initramfs: directories, files and device nodes by absolute
// path. WriteTo writes it as a newc cpio archive (the format the kernel unpacks into its
// rootfs), sorted by path, with every mtime, owner and inode fixed so the same content gives
// the same bytes.
type archive struct {
	entries map[string]entry
}

type entry struct {
	mode         uint32 // file type and permission bits, as in stat(2)
	data         []byte
	major, minor uint32 // device nodes
}

// cpio file type bits (as in stat(2)).
const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
	cpioChar = 0o020000
)

func newArchive() *archive { return &archive{entries: map[string]entry{}} }

// dir adds a directory and its parents.
func (a *archive) dir(name string, perm fs.FileMode) error {
	name, err := cleanName(name)
	if err != nil {
		return err
	}
	for p := name; p != "."; p = path.Dir(p) {
		e, ok := a.entries[p]
		if ok && e.mode&0o170000 != cpioDir {
			return fmt.Errorf("initrd: %s is both a file and a directory", p)
		}
		if !ok {
			mode := uint32(0o755)
			if p == name {
				mode = uint32(perm.Perm())
			}
			a.entries[p] = entry{mode: cpioDir | mode}
		}
	}
	return nil
}

// file adds a regular file (and its parent directories).
func (a *archive) file(name string, perm fs.FileMode, data []byte) error {
	name, err := cleanName(name)
	if err != nil {
		return err
	}
	return a.add(name, entry{mode: cpioFile | uint32(perm.Perm()), data: data})
}

// charDev adds a character device node.
func (a *archive) charDev(name string, perm fs.FileMode, major, minor uint32) error {
	name, err := cleanName(name)
	if err != nil {
		return err
	}
	return a.add(name, entry{mode: cpioChar | uint32(perm.Perm()), major: major, minor: minor})
}

func (a *archive) add(name string, e entry) error {
	if _, ok := a.entries[name]; ok {
		return fmt.Errorf("initrd: %s added twice", name)
	}
	if d := path.Dir(name); d != "." {
		if err := a.dir(d, 0o755); err != nil {
			return err
		}
	}
	a.entries[name] = e
	return nil
}

// cleanName makes "/lib/x" into "lib/x", the form the kernel expects in the archive.
func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(path.Clean("/"+name), "/")
	if n == "" || strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("initrd: bad path %q", name)
	}
	return n, nil
}

// WriteTo writes the archive in the newc format, entries sorted by path (so a directory
// comes before what it holds), then the trailer.
func (a *archive) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	slices.Sort(names)
	cw := &countWriter{w: w}
	for i, n := range names {
		e := a.entries[n]
		nlink := uint32(1)
		if e.mode&0o170000 == cpioDir {
			nlink = 2
		}
		if err := writeRecord(cw, uint32(i+1), e.mode, nlink, e.major, e.minor, n, e.data); err != nil {
			return cw.n, err
		}
	}
	err := writeRecord(cw, 0, 0, 1, 0, 0, "TRAILER!!!", nil)
	return cw.n, err
}

// writeRecord writes one newc record: the 110-byte header ("070701" and 13 eight-digit hex
// fields), the NUL-terminated name padded to 4 bytes, the data padded to 4 bytes.
func writeRecord(w io.Writer, ino, mode, nlink, major, minor uint32, name string, data []byte) error {
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0 /* uid */, 0 /* gid */, nlink, 0 /* mtime */, len(data),
		0, 0 /* devmajor, devminor */, major, minor /* rdevmajor, rdevminor */, len(name)+1, 0 /* check */)
	buf := make([]byte, 0, len(hdr)+len(name)+4)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	_, err := w.Write(make([]byte, pad4(len(data))))
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
