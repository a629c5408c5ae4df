package tftpd

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// DefaultFiles is the allow-list a region hands out: the iPXE binaries that classroom PCs fetch
// by TFTP before iPXE takes over over HTTP. Files missing from Dir are skipped (Debian's ipxe
// package has no arm64 builds).
var DefaultFiles = []string{
	"undionly.kpxe",     // BIOS PXE: iPXE on top of the NIC's UNDI driver
	"ipxe.efi",          // x86-64 UEFI, iPXE's own NIC drivers
	"snponly.efi",       // x86-64 UEFI, the firmware's SNP driver
	"ipxe-arm64.efi",    // arm64 UEFI, iPXE's own NIC drivers
	"snponly-arm64.efi", // arm64 UEFI, the firmware's SNP driver
}

// MaxNameLen is the longest requested name accepted, in bytes.
const MaxNameLen = 255

var (
	// ErrInvalidName: the requested name is malformed (path traversal, control bytes, ...).
	ErrInvalidName = errors.New("invalid file name")
	// ErrNotAllowed: the name is well formed but not in the allow-list.
	ErrNotAllowed = errors.New("file not in the allow-list")
)

// CleanName turns a name requested by a TFTP client into a name from DefaultFiles, or says why
// it cannot. See [Server] for a server's own allow-list.
func CleanName(raw string) (string, error) {
	return cleanName(raw, DefaultFiles)
}

// cleanName is the only place where a requested name becomes a file name. It is conservative:
// at most one leading "/" is stripped (many PXE ROMs send "/undionly.kpxe"), and what remains
// must equal an allow-listed name exactly; no directory prefixes, no case folding.
func cleanName(raw string, allowed []string) (string, error) {
	bad := func(format string, a ...any) (string, error) {
		return "", fmt.Errorf("%w: "+format, append([]any{ErrInvalidName}, a...)...)
	}
	switch {
	case raw == "":
		return bad("empty name")
	case len(raw) > MaxNameLen:
		return bad("name is %d bytes, more than %d", len(raw), MaxNameLen)
	case strings.IndexByte(raw, 0) >= 0:
		return bad("name contains a NUL byte")
	case strings.ContainsFunc(raw, unicode.IsControl):
		return bad("name contains a control character")
	case strings.IndexByte(raw, '\\') >= 0:
		return bad("name contains a backslash")
	}
	name := strings.TrimPrefix(raw, "/")
	switch {
	case name == "":
		return bad("empty name")
	case strings.HasPrefix(name, "/"):
		return bad("absolute path")
	case slices.Contains(strings.Split(name, "/"), ".."):
		return bad(`name contains ".."`)
	case !slices.Contains(allowed, name):
		return "", ErrNotAllowed
	}
	return name, nil
}

// validFileName reports whether an allow-list entry is a plain file name that cleanName can
// return unchanged.
func validFileName(name string) error {
	if strings.Contains(name, "/") || name == "." {
		return fmt.Errorf("%w: allow-list entry %q is not a plain file name", ErrInvalidName, name)
	}
	if got, err := cleanName(name, []string{name}); err != nil || got != name {
		return fmt.Errorf("allow-list entry %q: %w", name, err)
	}
	return nil
}
