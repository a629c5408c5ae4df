package s3store

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxPrefixLen is the longest prefix accepted, in bytes. S3 keys hold at most 1024 bytes; the
// rest is left for the store's own keys (chunks/ab/<64 hex digits> and the like).
const MaxPrefixLen = 896

// ParseLocation splits a location of the form s3://BUCKET or s3://BUCKET/PREFIX into the bucket
// and the prefix under which the store keeps its objects. One trailing slash is allowed
// (s3://images/lab1/ is s3://images/lab1); the prefix is returned without leading or trailing
// slashes. The bucket must be named by the rules of S3 (see ValidateBucket).
func ParseLocation(s string) (bucket, prefix string, err error) {
	const scheme = "s3://"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return "", "", fmt.Errorf("location %q: want s3://BUCKET or s3://BUCKET/PREFIX", clip(s))
	}
	rest := s[len(scheme):]
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := ValidateBucket(bucket); err != nil {
		return "", "", fmt.Errorf("location %q: %w", clip(s), err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if err := ValidatePrefix(prefix); err != nil {
		return "", "", fmt.Errorf("location %q: %w", clip(s), err)
	}
	return bucket, prefix, nil
}

// ValidateBucket checks a bucket name against the naming rules of S3 general purpose buckets:
// 3 to 63 lowercase letters, digits, dots and hyphens; a letter or digit at each end; no two dots
// in a row and no dot next to a hyphen; not an IP address; none of the prefixes and suffixes AWS
// reserves.
func ValidateBucket(name string) error {
	if name == "" {
		return errors.New("no bucket name")
	}
	q := clip(name)
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("bucket name %q has %d characters: S3 bucket names have 3 to 63", q, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-':
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("bucket name %q has upper case letters: S3 bucket names are lower case", q)
		default:
			return fmt.Errorf("bucket name %q: %q is not allowed; S3 bucket names have only lower case letters, digits, dots and hyphens", q, rune(c))
		}
	}
	if !alnum(name[0]) || !alnum(name[len(name)-1]) {
		return fmt.Errorf("bucket name %q must begin and end with a letter or digit", q)
	}
	for _, bad := range []string{"..", ".-", "-."} {
		if strings.Contains(name, bad) {
			return fmt.Errorf("bucket name %q must not contain %q", q, bad)
		}
	}
	if looksLikeIPv4(name) {
		return fmt.Errorf("bucket name %q must not look like an IP address", q)
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("bucket name %q must not start with %q, which S3 reserves", q, p)
		}
	}
	for _, sfx := range []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"} {
		if strings.HasSuffix(name, sfx) {
			return fmt.Errorf("bucket name %q must not end with %q, which S3 reserves", q, sfx)
		}
	}
	return nil
}

// ValidatePrefix checks a key prefix: slash-separated names with no leading or trailing slash,
// no empty names, no "." or "..", valid UTF-8 without control characters, at most MaxPrefixLen
// bytes. The empty prefix (the whole bucket) is valid.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	q := clip(prefix)
	if len(prefix) > MaxPrefixLen {
		return fmt.Errorf("prefix %q has %d bytes; at most %d leave room for the store's keys", q, len(prefix), MaxPrefixLen)
	}
	if !utf8.ValidString(prefix) {
		return fmt.Errorf("prefix %q is not valid UTF-8", q)
	}
	for _, r := range prefix {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("prefix %q holds control character %U", q, r)
		}
	}
	if strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("prefix %q must not begin or end with a slash", q)
	}
	for _, name := range strings.Split(prefix, "/") {
		switch name {
		case "":
			return fmt.Errorf("prefix %q has an empty name between two slashes", q)
		case ".", "..":
			return fmt.Errorf("prefix %q must not hold %q", q, name)
		}
	}
	return nil
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// looksLikeIPv4 reports whether s is four dot-separated groups of digits, as S3 (and minio-go)
// define "formatted as an IP address".
func looksLikeIPv4(s string) bool {
	groups := strings.Split(s, ".")
	if len(groups) != 4 {
		return false
	}
	for _, g := range groups {
		if g == "" || strings.Trim(g, "0123456789") != "" {
			return false
		}
	}
	return true
}

// clip shortens untrusted input before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
