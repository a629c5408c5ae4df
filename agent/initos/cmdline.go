package initos

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Config is what the kernel command line tells the in-memory OS.
type Config struct {
	Region *url.URL // tms.region=URL: the region's HTTP service (required)
	Token  string   // tms.token=…: the per-boot secret (optional)
	Disk   string   // tms.disk=/dev/…: the disk to use instead of the one found (optional)
	// BootEnv is tms.bootenv=VERSION: the version of the in-memory OS the boot script chose
	// (optional: absent when the region serves its plain boot directory).
	BootEnv string
}

// ParseCmdline reads the tms keys of a kernel command line (/proc/cmdline). Parameters are
// separated by spaces; a value may be in double quotes, as the kernel allows. Other keys are
// the kernel's and are ignored.
func ParseCmdline(s string) (Config, error) {
	var c Config
	var region string
	for _, p := range splitCmdline(s) {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "tms.region":
			region = v
		case "tms.token":
			c.Token = v
		case "tms.disk":
			c.Disk = v
		case "tms.bootenv":
			c.BootEnv = v
		}
	}
	if region == "" {
		return c, errors.New("the kernel command line has no tms.region=URL: the boot script must say where the region is")
	}
	u, err := url.Parse(region)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("tms.region=%q is not an http(s) URL", region)
	}
	c.Region = u
	if c.BootEnv != "" && !isVersionID(c.BootEnv) {
		return c, fmt.Errorf("tms.bootenv=%.80q is not a version id (64 lowercase hex digits)", c.BootEnv)
	}
	if c.Disk != "" && (!strings.HasPrefix(c.Disk, "/dev/") || strings.Contains(c.Disk[len("/dev/"):], "/") || strings.Contains(c.Disk, "..")) {
		return c, fmt.Errorf("tms.disk=%q is not a disk: give a device such as /dev/sda or /dev/nvme0n1", c.Disk)
	}
	return c, nil
}

// splitCmdline splits at spaces outside double quotes and drops the quotes, as the kernel's
// next_arg does ("key=\"a b\"" and "\"key=a b\"" both give key=a b).
func splitCmdline(s string) []string {
	var out []string
	var b strings.Builder
	quoted, any := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, any = !quoted, true
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if any {
				out = append(out, b.String())
				b.Reset()
				any = false
			}
		default:
			b.WriteRune(r)
			any = true
		}
	}
	if any {
		out = append(out, b.String())
	}
	return out
}

func isVersionID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
