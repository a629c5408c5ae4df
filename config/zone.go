package config

import (
	"os"
	"path/filepath"
	"strings"
	"time"
	_ "time/tzdata" // zone names are checked and used wherever tms runs, with or without the system's zoneinfo
)

// Zone is the IANA name of the region's time zone: region.timezone, else the server's local
// zone (LocalZone).
func (r Region) Zone() string {
	if r.Timezone != "" {
		return r.Timezone
	}
	return LocalZone()
}

// LocalZone names this machine's local time zone as IANA does (time.Local only says "Local"):
// $TZ if it holds a zone name, else the zone /etc/localtime links to, else /etc/timezone, else
// UTC.
func LocalZone() string {
	valid := func(z string) bool {
		_, err := time.LoadLocation(z)
		return z != "" && z != "Local" && err == nil
	}
	if z, ok := os.LookupEnv("TZ"); ok && valid(strings.TrimPrefix(z, ":")) {
		return strings.TrimPrefix(z, ":")
	}
	if link, err := os.Readlink("/etc/localtime"); err == nil {
		if i := strings.LastIndex(link, "zoneinfo/"); i >= 0 {
			if z := filepath.Clean(link[i+len("zoneinfo/"):]); valid(z) {
				return z
			}
		}
	}
	if b, err := os.ReadFile("/etc/timezone"); err == nil {
		if z := strings.TrimSpace(string(b)); valid(z) {
			return z
		}
	}
	return "UTC"
}
