package bootenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// A bundle is one published version of the in-memory OS as the image store holds it: its
// kernel and initrd in one file, which tms stores as the "disk" of an image in the reserved
// name space manifest.BootEnvPrefix, so that signing, sharing, the catalog of verified copies,
// pins and eviction all apply to it as to any image. Its layout:
//
//	magic   "TMSBOOTENV\x00\x01"             12 bytes
//	hlen    uint32, big endian                 1 to MaxBundleHeader
//	header  hlen bytes of JSON (BundleInfo)
//	files   the bytes of each file the header lists, in its order, nothing after them
//
// The header lists exactly two files, vmlinuz then initrd, each with its size and SHA-256: a
// reader checks the sizes against the bundle's before it reads a byte of them, and the hashes
// as it copies them out. The bundle's bytes also hash to the image version's chunk ids, which
// central signed: the SHA-256s guard against a bug, not an attacker.

// BundleMagic starts every bundle.
const BundleMagic = "TMSBOOTENV\x00\x01"

// Bounds of a bundle. A Debian kernel is about 10 MiB and tms's initrd a few tens of MiB.
const (
	MaxBundleHeader = 64 << 10
	MaxKernelSize   = 128 << 20
	MaxInitrdSize   = 1 << 30
	MaxBundleSize   = int64(len(BundleMagic)) + 4 + MaxBundleHeader + MaxKernelSize + MaxInitrdSize
	maxInfoString   = 256
)

// The files of a bundle, in order.
const (
	KernelFile = "vmlinuz"
	InitrdFile = "initrd"
)

// BundleInfo is a bundle's header.
type BundleInfo struct {
	// Name is the name the version was published under (tms bootenv publish --name).
	Name string `json:"name"`
	// KernelVersion is the kernel's version string (from its bzImage header); AgentVersion is
	// the tms release of the agent in its initrd, as the publisher knew it (may be empty).
	KernelVersion string       `json:"kernel_version,omitempty"`
	AgentVersion  string       `json:"agent_version,omitempty"`
	Files         []BundleFile `json:"files"`
}

// BundleFile is one file of a bundle.
type BundleFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ErrBadBundle marks every error about a bundle's content.
var ErrBadBundle = errors.New("not a valid bootenv bundle")

func badBundle(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadBundle, fmt.Sprintf(format, args...))
}

// WriteBundle writes the bundle of kernel and initrd (their bytes) with info's name and
// versions to w; info.Files is filled in.
func WriteBundle(w io.Writer, info BundleInfo, kernel, initrd []byte) (BundleInfo, error) {
	info.Files = []BundleFile{fileOf(KernelFile, kernel), fileOf(InitrdFile, initrd)}
	if err := info.validate(); err != nil {
		return info, err
	}
	h, err := json.Marshal(info)
	if err != nil {
		return info, err
	}
	if len(h) > MaxBundleHeader {
		return info, badBundle("header of %d bytes, more than %d", len(h), MaxBundleHeader)
	}
	var b bytes.Buffer
	b.WriteString(BundleMagic)
	binary.Write(&b, binary.BigEndian, uint32(len(h)))
	b.Write(h)
	for _, p := range [][]byte{b.Bytes(), kernel, initrd} {
		if _, err := w.Write(p); err != nil {
			return info, err
		}
	}
	return info, nil
}

func fileOf(name string, b []byte) BundleFile {
	s := sha256.Sum256(b)
	return BundleFile{Name: name, Size: int64(len(b)), SHA256: hex.EncodeToString(s[:])}
}

func (i BundleInfo) validate() error {
	for k, s := range map[string]string{"name": i.Name, "kernel_version": i.KernelVersion, "agent_version": i.AgentVersion} {
		if len(s) > maxInfoString {
			return badBundle("%s is longer than %d bytes", k, maxInfoString)
		}
		for _, c := range []byte(s) {
			if c < 0x20 || c > 0x7e {
				return badBundle("%s has a byte that is not printable ASCII", k)
			}
		}
	}
	if len(i.Files) != 2 || i.Files[0].Name != KernelFile || i.Files[1].Name != InitrdFile {
		return badBundle("want the files %s and %s, in that order", KernelFile, InitrdFile)
	}
	for j, f := range i.Files {
		limit := int64(MaxKernelSize)
		if j == 1 {
			limit = MaxInitrdSize
		}
		if f.Size <= 0 || f.Size > limit {
			return badBundle("%s has %d bytes; want 1 to %d", f.Name, f.Size, limit)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
			return badBundle("%s: sha256 %q is not 64 hex digits", f.Name, clipString(f.SHA256))
		}
	}
	return nil
}

func clipString(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Bundle is an opened bundle: its header and where its files lie.
type Bundle struct {
	Info BundleInfo
	r    io.ReaderAt
	offs []int64
}

// OpenBundle reads and checks the header of the bundle of size bytes that r holds. It refuses
// a bundle whose files do not end exactly at its end. The files' hashes are checked when they
// are copied out (Extract).
func OpenBundle(r io.ReaderAt, size int64) (*Bundle, error) {
	if size < int64(len(BundleMagic))+4 || size > MaxBundleSize {
		return nil, badBundle("%d bytes; want %d to %d", size, len(BundleMagic)+4, MaxBundleSize)
	}
	var pre [len(BundleMagic) + 4]byte
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if string(pre[:len(BundleMagic)]) != BundleMagic {
		return nil, badBundle("no bundle magic at the start")
	}
	hlen := int64(binary.BigEndian.Uint32(pre[len(BundleMagic):]))
	if hlen == 0 || hlen > MaxBundleHeader || int64(len(pre))+hlen > size {
		return nil, badBundle("header of %d bytes in a bundle of %d (at most %d)", hlen, size, MaxBundleHeader)
	}
	h := make([]byte, hlen)
	if _, err := r.ReadAt(h, int64(len(pre))); err != nil {
		return nil, fmt.Errorf("read bundle header: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(h))
	dec.DisallowUnknownFields()
	var info BundleInfo
	if err := dec.Decode(&info); err != nil {
		return nil, badBundle("header: %v", err)
	}
	if dec.More() {
		return nil, badBundle("trailing data after the header")
	}
	if err := info.validate(); err != nil {
		return nil, err
	}
	b := &Bundle{Info: info, r: r}
	off := int64(len(pre)) + hlen
	for _, f := range info.Files {
		b.offs = append(b.offs, off)
		off += f.Size
	}
	if off != size {
		return nil, badBundle("its files end at byte %d, the bundle at %d", off, size)
	}
	return b, nil
}

// File returns a reader of file i's bytes (unchecked).
func (b *Bundle) File(i int) io.Reader {
	return io.NewSectionReader(b.r, b.offs[i], b.Info.Files[i].Size)
}

// Extract writes the bundle's files into dir (which must exist), checking each one's hash; a
// file whose bytes do not match is an error and is left incomplete.
func (b *Bundle) Extract(dir string) error {
	for i, f := range b.Info.Files {
		if err := extractOne(filepath.Join(dir, f.Name), b.File(i), f); err != nil {
			return err
		}
	}
	return nil
}

func extractOne(path string, r io.Reader, f BundleFile) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return badBundle("%s: its bytes do not match the header's size and sha256", f.Name)
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

// KernelVersion reads the version string of a Linux bzImage (its setup header's
// kernel_version field, boot protocol 2.00 and later), and fails for anything that is not a
// bzImage.
func KernelVersion(b []byte) (string, error) {
	// The setup header: "HdrS" at 0x202, the protocol version at 0x206, kernel_version (an
	// offset from 0x200) at 0x20e, loadflags at 0x211 (bit 0: loaded high, a bzImage).
	if len(b) < 0x212 || string(b[0x202:0x206]) != "HdrS" || b[0x1fe] != 0x55 || b[0x1ff] != 0xaa {
		return "", errors.New("not a Linux kernel image: no boot sector signature and setup header (HdrS)")
	}
	if b[0x211]&1 == 0 {
		return "", errors.New("not a bzImage: the kernel does not load high")
	}
	if binary.LittleEndian.Uint16(b[0x206:]) < 0x200 {
		return "", errors.New("boot protocol older than 2.00")
	}
	p := int(binary.LittleEndian.Uint16(b[0x20e:])) + 0x200
	if p >= len(b) {
		return "", errors.New("kernel_version points past the image")
	}
	s := b[p:min(len(b), p+maxInfoString)]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	v, _, _ := bytes.Cut(s, []byte(" "))
	for _, c := range v {
		if c < 0x21 || c > 0x7e {
			return "", errors.New("kernel_version is not printable")
		}
	}
	return string(v), nil
}
