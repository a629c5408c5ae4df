package initos

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrNoDisk means no disk qualifies: the terminal boots without one (a capture or deploy
// will be refused by the region).
var ErrNoDisk = errors.New("no disk the agent may use")

// ErrNoSuchDisk means the disk tms.disk names is not (or not yet) there, or is a partition.
var ErrNoSuchDisk = errors.New("no such disk")

// Disks reads which block devices the agent could capture or write, from a /sys/block tree and
// a /proc/mounts file (paths, so tests give fakes). A disk qualifies unless:
//   - it is a loop, RAM, zram, floppy or optical device;
//   - the kernel says it is removable (removable = 1) or it hangs off USB (a stick or an
//     external disk somebody plugged in);
//   - it has no size (a card reader without a card);
//   - it or one of its partitions is mounted, or held by another device (RAID, LVM, dm).
//
// The reason each other device was passed over is in skipped.
func Disks(sysBlock, mounts string) (disks []string, skipped map[string]string, err error) {
	mounted, err := mountedDevices(mounts)
	if err != nil {
		return nil, nil, err
	}
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, nil, err
	}
	skipped = map[string]string{}
	for _, e := range ents {
		name := e.Name()
		if why := diskRefusal(sysBlock, name, mounted); why != "" {
			skipped[name] = why
			continue
		}
		disks = append(disks, name)
	}
	slices.Sort(disks)
	return disks, skipped, nil
}

// PickDisk returns the disk the agent uses: want (tms.disk) if it qualifies, or else the first
// disk that does by name (nvme0n1 before sda before vda). It refuses a want that does not
// qualify, saying why.
func PickDisk(sysBlock, mounts, want string) (string, error) {
	mounted, err := mountedDevices(mounts)
	if err != nil {
		return "", err
	}
	if want != "" {
		name := strings.TrimPrefix(want, "/dev/")
		if _, err := os.Stat(filepath.Join(sysBlock, name)); err != nil {
			return "", fmt.Errorf("tms.disk=%s: %w (is it a partition? give the whole disk)", want, ErrNoSuchDisk)
		}
		if why := diskRefusal(sysBlock, name, mounted); why != "" {
			return "", fmt.Errorf("tms.disk=%s refused: %s", want, why)
		}
		return "/dev/" + name, nil
	}
	disks, skipped, err := Disks(sysBlock, mounts)
	if err != nil {
		return "", err
	}
	if len(disks) == 0 {
		var why []string
		for n, w := range skipped {
			why = append(why, n+": "+w)
		}
		slices.Sort(why)
		if len(why) == 0 {
			return "", ErrNoDisk
		}
		return "", fmt.Errorf("%w (%s)", ErrNoDisk, strings.Join(why, "; "))
	}
	return "/dev/" + disks[0], nil
}

// diskRefusal says why a block device must not be used, or "" if it may.
func diskRefusal(sysBlock, name string, mounted map[string]bool) string {
	for _, p := range []string{"loop", "ram", "zram", "sr", "fd", "nbd"} {
		if strings.HasPrefix(name, p) && len(name) > len(p) && name[len(p)] >= '0' && name[len(p)] <= '9' {
			return "not a disk (" + p + " device)"
		}
	}
	dir := filepath.Join(sysBlock, name)
	if readTrim(filepath.Join(dir, "removable")) == "1" {
		return "removable"
	}
	if l, err := os.Readlink(dir); err == nil && strings.Contains(l, "/usb") {
		return "a USB device"
	}
	if n, err := strconv.ParseInt(readTrim(filepath.Join(dir, "size")), 10, 64); err != nil || n <= 0 {
		return "no size (no medium)"
	}
	parts := []string{name}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err == nil {
			parts = append(parts, e.Name())
		}
	}
	for _, p := range parts {
		if mounted[p] {
			return "/dev/" + p + " is mounted"
		}
		hold := filepath.Join(dir, "holders")
		if p != name {
			hold = filepath.Join(dir, p, "holders")
		}
		if h, _ := os.ReadDir(hold); len(h) > 0 {
			return "/dev/" + p + " is in use by " + h[0].Name()
		}
	}
	return ""
}

// mountedDevices lists the device names (sda1, nvme0n1p2) that /proc/mounts has mounted.
func mountedDevices(mounts string) (map[string]bool, error) {
	f, err := os.Open(mounts)
	if err != nil {
		return nil, fmt.Errorf("cannot tell which disks are in use: %w", err)
	}
	defer f.Close()
	m := map[string]bool{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		src, _, _ := strings.Cut(s.Text(), " ")
		if strings.HasPrefix(src, "/dev/") {
			m[filepath.Base(src)] = true
			if r, err := filepath.EvalSymlinks(src); err == nil { // /dev/disk/by-uuid/…, /dev/root
				m[filepath.Base(r)] = true
			}
		}
	}
	return m, s.Err()
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}
