package bootenv

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"path/filepath"

	"tms/internal/atomicfile"
)

// NewInitrd returns a gzip'd newc cpio archive whose /init (mode 0755) is init, with files
// (absolute path → bytes, mode 0644) beside it: the smallest initrd CheckInitrd accepts when
// init is a static ELF executable. Build writes the real one.
func NewInitrd(init []byte, files map[string][]byte) ([]byte, error) {
	a := newArchive()
	if err := a.file("/init", 0o755, init); err != nil {
		return nil, err
	}
	for p, b := range files {
		if err := a.file(p, 0o644, b); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := a.WriteTo(zw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SampleKernel returns the setup header of a bzImage whose kernel_version reads version,
// followed by pad bytes: enough for KernelVersion and tms dev's simulated terminals, which
// check a kernel's header but run no kernel. It boots nothing on a real PC.
func SampleKernel(version string, pad int) []byte {
	b := make([]byte, 0x400+len(version)+1+pad)
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x20f)
	binary.LittleEndian.PutUint16(b[0x20e:], 0x400-0x200)
	b[0x211] = 1 // LOADED_HIGH
	copy(b[0x400:], version)
	return b
}

// SampleInit returns a minimal static ELF executable for x86-64 (one loadable segment whose
// code exits 0): enough for CheckStaticELF and tms dev's simulated terminals, and a real
// program, though not an agent.
func SampleInit() []byte {
	// mov eax, 60; xor edi, edi; syscall
	code := []byte{0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05}
	const base, hdr = 0x400000, 64 + 56
	b := make([]byte, hdr+len(code))
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // 64-bit, little endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+hdr) // entry
	le.PutUint64(b[32:], 64)       // phoff
	le.PutUint16(b[52:], 64)       // ehsize
	le.PutUint16(b[54:], 56)       // phentsize
	le.PutUint16(b[56:], 1)        // phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 1)     // PT_LOAD
	le.PutUint32(ph[4:], 5)     // R+X
	le.PutUint64(ph[16:], base) // vaddr
	le.PutUint64(ph[24:], base) // paddr
	le.PutUint64(ph[32:], uint64(len(b)))
	le.PutUint64(ph[40:], uint64(len(b)))
	le.PutUint64(ph[48:], 0x1000)
	copy(b[hdr:], code)
	return b
}

// WriteSample writes a sample bootenv into dir (vmlinuz from SampleKernel, initrd from
// NewInitrd with SampleInit): what tms dev's simulated terminals can "boot". It is not a
// bootable OS for a real PC; tms bootenv build makes that.
func WriteSample(dir, kernelVersion string) error {
	initrd, err := NewInitrd(SampleInit(), map[string][]byte{"/etc/tms/sample": []byte("a sample bootenv for tms dev\n")})
	if err != nil {
		return err
	}
	return writeFiles(dir, SampleKernel(kernelVersion, 4096), initrd)
}

func writeFiles(dir string, kernel, initrd []byte) error {
	for name, b := range map[string][]byte{KernelFile: kernel, InitrdFile: initrd} {
		if err := atomicfile.Write(filepath.Join(dir, name), bytes.NewReader(b), 0o644); err != nil {
			return fmt.Errorf("bootenv sample: %w", err)
		}
	}
	return nil
}
