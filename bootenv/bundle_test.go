package bootenv

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleBundle(t testing.TB) ([]byte, []byte, []byte) {
	kernel := SampleKernel("6.12.0-1-amd64", 100)
	initrd, err := NewInitrd(SampleInit(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := WriteBundle(&b, BundleInfo{Name: "lab", KernelVersion: "6.12.0-1-amd64", AgentVersion: "v1.2.3"}, kernel, initrd); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), kernel, initrd
}

func TestBundleRoundTrip(t *testing.T) {
	b, kernel, initrd := sampleBundle(t)
	bu, err := OpenBundle(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if bu.Info.Name != "lab" || bu.Info.KernelVersion != "6.12.0-1-amd64" || bu.Info.AgentVersion != "v1.2.3" {
		t.Fatalf("info %+v", bu.Info)
	}
	dir := t.TempDir()
	if err := bu.Extract(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{KernelFile: kernel, InitrdFile: initrd} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	if err := CheckInitrd(initrd); err != nil {
		t.Fatalf("the sample initrd: %v", err)
	}
	if v, err := KernelVersion(kernel); err != nil || v != "6.12.0-1-amd64" {
		t.Fatalf("kernel version %q, %v", v, err)
	}
}

func TestBundleRefuses(t *testing.T) {
	good, _, _ := sampleBundle(t)
	hlen := int(binary.BigEndian.Uint32(good[len(BundleMagic):]))
	body := len(BundleMagic) + 4 + hlen
	withHeader := func(h string) []byte {
		var b bytes.Buffer
		b.WriteString(BundleMagic)
		binary.Write(&b, binary.BigEndian, uint32(len(h)))
		b.WriteString(h)
		b.Write(good[body:])
		return b.Bytes()
	}
	header := string(good[len(BundleMagic)+4 : body])
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "0 bytes"},
		{"wrong magic", append([]byte("TMSBOOTENV\x00\x02"), good[len(BundleMagic):]...), "no bundle magic"},
		{"header longer than the bundle", append(append([]byte(BundleMagic), 0, 0, 0xff, 0xff), good[len(BundleMagic)+4:]...), "header of 65535 bytes"},
		{"header over the bound", append(append([]byte(BundleMagic), 0, 1, 0, 1), make([]byte, 70000)...), "at most 65536"},
		{"truncated file", good[:len(good)-1], "its files end at byte"},
		{"trailing bytes", append(append([]byte(nil), good...), 0), "its files end at byte"},
		{"unknown header field", withHeader(strings.Replace(header, `"name"`, `"nam"`, 1)), "unknown field"},
		{"files swapped", withHeader(strings.Replace(strings.Replace(header, `"vmlinuz"`, `"X"`, 1), `"initrd"`, `"vmlinuz"`, 1)), "want the files"},
		{"no files", withHeader(`{"name":"x","files":[]}`), "want the files"},
		{"kernel too large", withHeader(strings.Replace(header, `"size":`, `"size":9999999`, 1)), "want 1 to"},
		{"bad hash", withHeader(strings.Replace(header, `"sha256":"`, `"sha256":"zz`, 1)), "not 64 hex digits"},
		{"control byte in a name", withHeader(strings.Replace(header, `"lab"`, `"l\u0007b"`, 1)), "not printable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenBundle(bytes.NewReader(tc.b), int64(len(tc.b)))
			if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrBadBundle with %q", err, tc.want)
			}
		})
	}
	t.Run("a flipped byte in a file fails its extraction", func(t *testing.T) {
		b := append([]byte(nil), good...)
		b[len(b)-10] ^= 1
		bu, err := OpenBundle(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if err := bu.Extract(t.TempDir()); !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), "initrd") {
			t.Fatalf("extract: %v", err)
		}
	})
}

func TestCheckInitrdRefuses(t *testing.T) {
	dynamic := SampleInit()
	// Make the one program header a PT_INTERP: a dynamically linked program.
	binary.LittleEndian.PutUint32(dynamic[64:], 3)
	for _, tc := range []struct {
		name   string
		initrd func() []byte
		want   string
	}{
		{"not gzip", func() []byte { return []byte("a kernel") }, "not gzip"},
		{"init is a script", func() []byte { b, _ := NewInitrd([]byte("#!/bin/sh\n"), nil); return b }, "not an ELF"},
		{"init is dynamic", func() []byte { b, _ := NewInitrd(dynamic, nil); return b }, "dynamically linked"},
		{"no init", func() []byte {
			a := newArchive()
			a.file("/bin/agent", 0o755, SampleInit())
			var buf bytes.Buffer
			zw := gzipWriter(&buf)
			a.WriteTo(zw)
			zw.Close()
			return buf.Bytes()
		}, "no /init"},
		{"truncated", func() []byte { b, _ := NewInitrd(SampleInit(), nil); return b[:len(b)/2] }, "initrd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckInitrd(tc.initrd()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestKernelVersionRefusesWhatIsNotABzImage(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"text", []byte("a kernel"), "no boot sector"},
		{"not loaded high", func() []byte { b := SampleKernel("6.1", 0); b[0x211] = 0; return b }(), "not a bzImage"},
		{"pointer past the end", func() []byte { b := SampleKernel("", 0); binary.LittleEndian.PutUint16(b[0x20e:], 0xffff); return b }(), "past the image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := KernelVersion(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzOpenBundle(f *testing.F) {
	good, _, _ := sampleBundle(f)
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte(BundleMagic + "\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		bu, err := OpenBundle(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrBadBundle) {
				t.Fatalf("error not ErrBadBundle: %v", err)
			}
			return
		}
		if err := bu.Info.validate(); err != nil {
			t.Fatalf("opened a bundle whose header does not validate: %v", err)
		}
		_ = bu.Extract(t.TempDir())
	})
}

func FuzzCheckInitrd(f *testing.F) {
	good, _ := NewInitrd(SampleInit(), map[string][]byte{"/etc/x": []byte("x")})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = CheckInitrd(b)
	})
}

func gzipWriter(w *bytes.Buffer) *gzip.Writer { return gzip.NewWriter(w) }
