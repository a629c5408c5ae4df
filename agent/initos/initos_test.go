package initos

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		region     string
		token      string
		disk       string
		bootenv    string
		err        string
	}{
		{name: "bootenv version", line: "tms.region=http://a:1 tms.bootenv=" + strings.Repeat("ab", 32), region: "http://a:1", bootenv: strings.Repeat("ab", 32)},
		{name: "bootenv not a version", line: "tms.region=http://a:1 tms.bootenv=abc", err: "not a version id"},
		{name: "bootenv in capitals", line: "tms.region=http://a:1 tms.bootenv=" + strings.Repeat("AB", 32), err: "not a version id"},
		{name: "region only", line: "console=ttyS0 tms.region=http://10.0.2.2:8301\n", region: "http://10.0.2.2:8301"},
		{name: "all keys among the kernel's", line: "BOOT_IMAGE=vmlinuz quiet tms.region=https://r1.school.example/ tms.token=abc123 tms.disk=/dev/nvme0n1 panic=10",
			region: "https://r1.school.example/", token: "abc123", disk: "/dev/nvme0n1"},
		{name: "quoted value", line: `tms.region="http://10.0.5.2:8301" "tms.token=a b"`, region: "http://10.0.5.2:8301", token: "a b"},
		{name: "the last of a repeated key wins", line: "tms.region=http://a:1 tms.region=http://b:2", region: "http://b:2"},
		{name: "tabs and newlines separate", line: "tms.region=http://a:1\ttms.disk=/dev/sda\n", region: "http://a:1", disk: "/dev/sda"},
		{name: "no region", line: "console=ttyS0 tms.token=x", err: "no tms.region"},
		{name: "empty region", line: "tms.region=", err: "no tms.region"},
		{name: "region not http", line: "tms.region=ftp://10.0.0.1/", err: "not an http(s) URL"},
		{name: "region without host", line: "tms.region=http://", err: "not an http(s) URL"},
		{name: "a prefix of the key is another key", line: "tms.regionx=http://a:1", err: "no tms.region"},
		{name: "disk outside /dev", line: "tms.region=http://a:1 tms.disk=/tmp/x", err: "not a disk"},
		{name: "disk escaping /dev", line: "tms.region=http://a:1 tms.disk=/dev/../etc/passwd", err: "not a disk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCmdline(tc.line)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Region.String() != tc.region || c.Token != tc.token || c.Disk != tc.disk || c.BootEnv != tc.bootenv {
				t.Errorf("got region %q token %q disk %q bootenv %q", c.Region, c.Token, c.Disk, c.BootEnv)
			}
		})
	}
}

// FuzzParseCmdline: the command line comes from the region's boot script; whatever it says,
// parsing returns a config with an http(s) region or an error, and never panics.
func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 tms.region=http://10.0.2.2:8301 tms.token=x tms.disk=/dev/sda")
	f.Add(`"tms.region=http://a b" tms.disk="/dev/vda`)
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseCmdline(line)
		if err != nil {
			return
		}
		if c.Region == nil || (c.Region.Scheme != "http" && c.Region.Scheme != "https") {
			t.Fatalf("accepted region %v", c.Region)
		}
		if c.Disk != "" && (!strings.HasPrefix(c.Disk, "/dev/") || strings.Contains(c.Disk, "..")) {
			t.Fatalf("accepted disk %q", c.Disk)
		}
	})
}

// fakeSys lays out a /sys/block tree as the kernel shows it: each entry a symlink into
// /sys/devices (through a USB bus for USB devices), with removable, size, holders and a
// directory per partition.
type fakeDisk struct {
	name      string
	removable bool
	usb       bool
	size      string
	parts     []string
	holder    string // a device holding the disk (dm-0 for LVM)
}

func fakeSys(t *testing.T, disks []fakeDisk, mounts string) (sysBlock, mountsFile string) {
	root := t.TempDir()
	sysBlock = filepath.Join(root, "block")
	must(t, os.MkdirAll(sysBlock, 0o755))
	for _, d := range disks {
		bus := "pci0000:00/0000:00:04.0/virtio2/block"
		if d.usb {
			bus = "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block"
		}
		dev := filepath.Join(root, "devices", bus, d.name)
		must(t, os.MkdirAll(filepath.Join(dev, "holders"), 0o755))
		rem := "0"
		if d.removable {
			rem = "1"
		}
		size := d.size
		if size == "" {
			size = "131072"
		}
		must(t, os.WriteFile(filepath.Join(dev, "removable"), []byte(rem+"\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(dev, "size"), []byte(size+"\n"), 0o644))
		if d.holder != "" {
			must(t, os.MkdirAll(filepath.Join(dev, "holders", d.holder), 0o755))
		}
		for _, p := range d.parts {
			must(t, os.MkdirAll(filepath.Join(dev, p, "holders"), 0o755))
			must(t, os.WriteFile(filepath.Join(dev, p, "partition"), []byte("1\n"), 0o644))
		}
		rel, err := filepath.Rel(sysBlock, dev)
		must(t, err)
		must(t, os.Symlink(rel, filepath.Join(sysBlock, d.name)))
	}
	mountsFile = filepath.Join(root, "mounts")
	must(t, os.WriteFile(mountsFile, []byte(mounts), 0o644))
	return sysBlock, mountsFile
}

const baseMounts = "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\ndevtmpfs /dev devtmpfs rw 0 0\n"

func TestPickDisk(t *testing.T) {
	for _, tc := range []struct {
		name   string
		disks  []fakeDisk
		mounts string
		want   string // tms.disk
		disk   string
		err    string
	}{
		{name: "the only disk", disks: []fakeDisk{{name: "vda"}}, disk: "/dev/vda"},
		{name: "first by name", disks: []fakeDisk{{name: "sda"}, {name: "nvme0n1"}}, disk: "/dev/nvme0n1"},
		{name: "loop, ram, zram and optical devices are not disks",
			disks: []fakeDisk{{name: "loop0"}, {name: "ram0"}, {name: "zram0"}, {name: "sr0"}, {name: "sdb"}}, disk: "/dev/sdb"},
		{name: "a removable disk is skipped", disks: []fakeDisk{{name: "sda", removable: true}, {name: "sdb"}}, disk: "/dev/sdb"},
		{name: "a USB disk is skipped", disks: []fakeDisk{{name: "sda", usb: true}, {name: "sdb"}}, disk: "/dev/sdb"},
		{name: "a disk without medium is skipped", disks: []fakeDisk{{name: "sda", size: "0"}, {name: "sdb"}}, disk: "/dev/sdb"},
		{name: "a disk with a mounted partition is skipped",
			disks:  []fakeDisk{{name: "sda", parts: []string{"sda1", "sda2"}}, {name: "sdb"}},
			mounts: baseMounts + "/dev/sda2 /mnt ext4 rw 0 0\n", disk: "/dev/sdb"},
		{name: "a mounted whole disk is skipped", disks: []fakeDisk{{name: "sda"}, {name: "sdb"}},
			mounts: baseMounts + "/dev/sda /mnt ext4 rw 0 0\n", disk: "/dev/sdb"},
		{name: "a mount of another disk's partition does not matter", disks: []fakeDisk{{name: "sda", parts: []string{"sda1"}}},
			mounts: baseMounts + "/dev/sda10 /mnt ext4 rw 0 0\n", disk: "/dev/sda"},
		{name: "a disk held by LVM is skipped", disks: []fakeDisk{{name: "sda", holder: "dm-0"}, {name: "sdb"}}, disk: "/dev/sdb"},
		{name: "tms.disk is used when it qualifies", disks: []fakeDisk{{name: "sda"}, {name: "sdb"}}, want: "/dev/sdb", disk: "/dev/sdb"},
		{name: "tms.disk naming a removable disk is refused", disks: []fakeDisk{{name: "sda"}, {name: "sdb", removable: true}},
			want: "/dev/sdb", err: "refused: removable"},
		{name: "tms.disk naming a mounted disk is refused", disks: []fakeDisk{{name: "sda", parts: []string{"sda1"}}},
			mounts: baseMounts + "/dev/sda1 /mnt vfat rw 0 0\n", want: "/dev/sda", err: "/dev/sda1 is mounted"},
		{name: "tms.disk naming a loop device is refused", disks: []fakeDisk{{name: "loop0"}}, want: "/dev/loop0", err: "refused: not a disk"},
		{name: "tms.disk naming a partition is refused", disks: []fakeDisk{{name: "sda", parts: []string{"sda1"}}}, want: "/dev/sda1", err: "no such disk"},
		{name: "no disk qualifies", disks: []fakeDisk{{name: "sda", usb: true}, {name: "loop0"}}, err: "no disk the agent may use (loop0: not a disk (loop device); sda: a USB device)"},
		{name: "no disk at all", err: "no disk the agent may use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mounts := tc.mounts
			if mounts == "" {
				mounts = baseMounts
			}
			sb, mf := fakeSys(t, tc.disks, mounts)
			d, err := PickDisk(sb, mf, tc.want)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("PickDisk = %q, %v; want an error saying %q", d, err, tc.err)
				}
				return
			}
			if err != nil || d != tc.disk {
				t.Fatalf("PickDisk = %q, %v; want %s", d, err, tc.disk)
			}
		})
	}
	sb, _ := fakeSys(t, []fakeDisk{{name: "sda"}}, "")
	if _, err := PickDisk(sb, filepath.Join(t.TempDir(), "no-mounts"), ""); err == nil {
		t.Error("a disk was picked without knowing what is mounted")
	}
}

func TestReadModuleList(t *testing.T) {
	got, err := ReadModuleList(strings.NewReader("# load order\n/lib/modules/6.12/a.ko\n\n  /lib/modules/6.12/b.ko  \n"))
	if err != nil || !slices.Equal(got, []string{"/lib/modules/6.12/a.ko", "/lib/modules/6.12/b.ko"}) {
		t.Errorf("ReadModuleList = %q, %v", got, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
