package devenv

import (
	"os"
	"strings"
	"testing"
)

func TestParseScript(t *testing.T) {
	probe, err := os.ReadFile("../bootsvc/testdata/probe.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	local, err := os.ReadFile("../bootsvc/testdata/local-no-task.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, script string
		want         bootScript
		err          string
	}{
		{name: "the region's probe script", script: string(probe), want: bootScript{Kernel: "http://10.0.5.2:8301/boot/VERSION/vmlinuz",
			Initrd: "http://10.0.5.2:8301/boot/VERSION/initrd", Cmdline: "initrd=initrd console=ttyS0 tms.region=http://10.0.5.2:8301 tms.token=TOKEN tms.bootenv=VERSION"}},
		{name: "the region's local script", script: string(local)},
		{name: "not iPXE", script: "kernel http://x/k", err: "not an iPXE script"},
		{name: "kernel without initrd", script: "#!ipxe\nkernel http://x/k a=b\n", err: "without an initrd"},
		{name: "two kernels", script: "#!ipxe\nkernel http://x/k\nkernel http://x/k2\n", err: "two kernels"},
		{name: "an initrd line tms does not write", script: "#!ipxe\nkernel http://x/k\ninitrd http://x/i\n", err: "not what tms writes"},
		{name: "too long", script: "#!ipxe\n" + strings.Repeat("#", maxScript), err: "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseScript(tc.script)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseScript(f *testing.F) {
	if b, err := os.ReadFile("../bootsvc/testdata/probe.ipxe"); err == nil {
		f.Add(string(b))
	}
	f.Add("#!ipxe\nkernel a || goto x\ninitrd --name initrd b\n")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parseScript(s)
		if err == nil && (b.Kernel == "") != (b.Initrd == "") {
			t.Fatalf("a kernel without an initrd was taken: %+v", b)
		}
	})
}
