package tftpd

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		raw, want string
		err       error
		reason    string // part of the error message
	}{
		{raw: "undionly.kpxe", want: "undionly.kpxe"},
		{raw: "ipxe.efi", want: "ipxe.efi"},
		{raw: "snponly-arm64.efi", want: "snponly-arm64.efi"},
		{raw: "/undionly.kpxe", want: "undionly.kpxe"},
		{raw: "//undionly.kpxe", err: ErrInvalidName, reason: "absolute path"},
		{raw: "/etc/passwd", err: ErrNotAllowed},
		{raw: "//etc/passwd", err: ErrInvalidName, reason: "absolute path"},
		{raw: "../../etc/passwd", err: ErrInvalidName, reason: `".."`},
		{raw: "pxelinux/../undionly.kpxe", err: ErrInvalidName, reason: `".."`},
		{raw: "..", err: ErrInvalidName, reason: `".."`},
		{raw: "pxelinux/undionly.kpxe", err: ErrNotAllowed},
		{raw: "./undionly.kpxe", err: ErrNotAllowed},
		{raw: "UNDIONLY.KPXE", err: ErrNotAllowed},
		{raw: "undionly.kpxe ", err: ErrNotAllowed},
		{raw: "pxelinux.0", err: ErrNotAllowed},
		{raw: `..\..\windows\win.ini`, err: ErrInvalidName, reason: "backslash"},
		{raw: `\undionly.kpxe`, err: ErrInvalidName, reason: "backslash"},
		{raw: "undionly.kpxe\x00.txt", err: ErrInvalidName, reason: "NUL"},
		{raw: "undionly.kpxe\n", err: ErrInvalidName, reason: "control"},
		{raw: "undionly\x7f.kpxe", err: ErrInvalidName, reason: "control"},
		{raw: "undionly\u0085.kpxe", err: ErrInvalidName, reason: "control"},
		{raw: "", err: ErrInvalidName, reason: "empty"},
		{raw: "/", err: ErrInvalidName, reason: "empty"},
		{raw: strings.Repeat("a", 256), err: ErrInvalidName, reason: "256 bytes"},
		{raw: strings.Repeat("/", 200) + "undionly.kpxe", err: ErrInvalidName, reason: "absolute"},
		{raw: "undionly.kpxe\xff", err: ErrNotAllowed},
	}
	for _, tt := range tests {
		got, err := CleanName(tt.raw)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("CleanName(%q) = %q, %v; want %q, %v", tt.raw, got, err, tt.want, tt.err)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("CleanName(%q) error %q does not say %q", tt.raw, err, tt.reason)
		}
	}
}

func TestDefaultFilesAreValid(t *testing.T) {
	for _, name := range DefaultFiles {
		if err := validFileName(name); err != nil {
			t.Error(err)
		}
	}
	for _, name := range []string{"a/b", "..", ".", "", "/x", "x\x00"} {
		if err := validFileName(name); err == nil {
			t.Errorf("validFileName(%q) accepted it", name)
		}
	}
}

// FuzzCleanName: whatever a client sends, CleanName either refuses it or returns a name that
// is in the allow-list exactly.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{
		"undionly.kpxe", "/ipxe.efi", "//snponly.efi", "../../etc/passwd", "/etc/passwd",
		`..\x`, "pxelinux/undionly.kpxe", "undionly.kpxe\x00", "\x7f", "", "/", "ipxe.efi/..",
		strings.Repeat("a/", 130),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, err := CleanName(raw)
		if err != nil {
			if name != "" {
				t.Fatalf("CleanName(%q) returned %q with error %v", raw, name, err)
			}
			if !errors.Is(err, ErrInvalidName) && !errors.Is(err, ErrNotAllowed) {
				t.Fatalf("CleanName(%q): error %v is neither ErrInvalidName nor ErrNotAllowed", raw, err)
			}
			return
		}
		if !slices.Contains(DefaultFiles, name) {
			t.Fatalf("CleanName(%q) = %q, not in the allow-list", raw, name)
		}
		if raw != name && raw != "/"+name {
			t.Fatalf("CleanName(%q) = %q: more than one leading slash removed", raw, name)
		}
	})
}
