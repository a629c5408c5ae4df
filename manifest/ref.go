package manifest

import (
	"fmt"
	"strings"
)

// DefaultTag is the tag that NAME alone stands for.
const DefaultTag = "latest"

// MinVersionPrefix is the shortest version id prefix a reference may use.
const MinVersionPrefix = 6

// Ref is a parsed image reference: NAME, NAME:TAG or NAME@VERSIONID (a unique prefix is enough).
type Ref struct {
	Name string
	// Tag is set for NAME and NAME:TAG (DefaultTag for NAME).
	Tag string
	// Version is a version id or a prefix of one, for NAME@VERSIONID.
	Version string
	// Explicit is true when the reference named a tag or version rather than NAME alone.
	Explicit bool
}

// String formats the reference as people write it.
func (r Ref) String() string {
	if r.Version != "" {
		return r.Name + "@" + r.Version
	}
	return r.Name + ":" + r.Tag
}

// ParseRef parses NAME, NAME:TAG or NAME@VERSIONID.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("empty image reference")
	}
	if len(s) > 512 {
		return Ref{}, fmt.Errorf("image reference %q is longer than 512 bytes", clip(s))
	}
	name, rest, sep := s, "", byte(0)
	if i := strings.IndexAny(s, ":@"); i >= 0 {
		name, rest, sep = s[:i], s[i+1:], s[i]
	}
	if err := ValidateName(name); err != nil {
		return Ref{}, fmt.Errorf("image reference %q: %w", clip(s), err)
	}
	switch sep {
	case 0:
		return Ref{Name: name, Tag: DefaultTag}, nil
	case ':':
		if err := ValidateTag(rest); err != nil {
			return Ref{}, fmt.Errorf("image reference %q: %w", clip(s), err)
		}
		return Ref{Name: name, Tag: rest, Explicit: true}, nil
	default:
		if err := validateVersionPrefix(rest); err != nil {
			return Ref{}, fmt.Errorf("image reference %q: %w", clip(s), err)
		}
		return Ref{Name: name, Version: rest, Explicit: true}, nil
	}
}

// ValidateName checks an image name: 1 to 128 letters, digits, '.', '_' or '-', starting with a
// letter or digit. Names become path segments in stores, so nothing else is allowed.
func ValidateName(s string) error { return validateWord("image name", s) }

// ValidateTag checks a tag with the same rules as a name.
func ValidateTag(s string) error { return validateWord("tag", s) }

func validateWord(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > 128 {
		return fmt.Errorf("%s %q is longer than 128 characters", what, clip(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("%s %q must start with a letter or digit", what, clip(s))
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%s %q: character %q is not allowed (letters, digits, '.', '_', '-')", what, clip(s), c)
		}
	}
	return nil
}

func validateVersionPrefix(s string) error {
	if len(s) < MinVersionPrefix {
		return fmt.Errorf("version %q is too short: give at least %d hex digits", clip(s), MinVersionPrefix)
	}
	if len(s) > 2*IDLen {
		return fmt.Errorf("version %q is longer than %d hex digits", clip(s), 2*IDLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("version %q: %q is not a lowercase hex digit", clip(s), c)
		}
	}
	return nil
}

// BootEnvPrefix starts the names of the images that hold versions of the in-memory OS (tms
// bootenv publish): bootenv.NAME. The name space is tms's own: captures and imports of disk
// images refuse it, and deploys refuse to write such a version to a disk.
const BootEnvPrefix = "bootenv."

// IsBootEnv reports whether name is in the in-memory OS's reserved name space.
func IsBootEnv(name string) bool { return strings.HasPrefix(name, BootEnvPrefix) }

// ValidateDiskName checks the name of a disk image: a valid name outside BootEnvPrefix.
func ValidateDiskName(s string) error {
	if err := ValidateName(s); err != nil {
		return err
	}
	if IsBootEnv(s) {
		return fmt.Errorf("image name %q: names starting with %q are reserved for the in-memory OS (tms bootenv publish)", clip(s), BootEnvPrefix)
	}
	return nil
}
