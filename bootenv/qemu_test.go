//go:build qemu

package bootenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"tms/agentwire"
)

// TestQEMUBoot boots the built kernel and initrd in QEMU (software emulation), as a classroom
// PC network boots them, against a stand-in region on 127.0.0.1 that answers only
// POST /v1/agent/boot, with "local". A machine passes when the boot request arrives with its
// MAC, its disk and the disk's size and the kernel command line's boot token, and the VM then
// reboots (which ends QEMU, started with -no-reboot). A tms.disk that is not a usable disk
// must be refused: no boot request, a message on the console, a reboot.
//
//	go test -tags qemu -run TestQEMUBoot -v ./bootenv/   (or scripts/test-bootenv)
func TestQEMUBoot(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
	}
	kernel, err := NewestKernel("/boot")
	if err != nil {
		t.Skipf("no kernel to boot: %v (Debian: linux-image-amd64)", err)
	}
	modDir := filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-"))
	if _, err := os.Stat(filepath.Join(modDir, "modules.dep")); err != nil {
		t.Skipf("the kernel's modules are missing: %v", err)
	}

	dir := t.TempDir()
	start := time.Now()
	res, err := Build(context.Background(), Options{Out: filepath.Join(dir, "boot"), Kernel: kernel, ModulesDir: modDir, AgentVersion: testAgentVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %v: vmlinuz %d bytes, initrd %d bytes, %d modules", time.Since(start).Round(time.Millisecond),
		res.KernelSize, res.InitrdSize, len(res.Modules))

	for _, tc := range []struct {
		name string
		// devices are QEMU's NIC and disk controller; the NIC gets netdev n0 and mac=MAC
		// appended, %s in the disk options is the disk file.
		nic     string
		disk    []string
		cmdline string // beyond console and tms.region
		want    string // the disk the agent reports; "" if it must refuse
		refusal string // what the console says then
	}{
		{name: "virtio", nic: "virtio-net-pci", disk: []string{"-drive", "file=%s,format=raw,if=virtio"},
			cmdline: "tms.token=boot-secret-1", want: "/dev/vda"},
		{name: "classroom PC: Intel NIC and SATA disk", nic: "e1000e",
			disk:    []string{"-drive", "file=%s,format=raw,if=none,id=d0", "-device", "ahci,id=ahci", "-device", "ide-hd,drive=d0,bus=ahci.0"},
			cmdline: "tms.token=boot-secret-2", want: "/dev/sda"},
		{name: "NVMe disk named by tms.disk", nic: "e1000",
			disk:    []string{"-drive", "file=%s,format=raw,if=none,id=d0", "-device", "nvme,drive=d0,serial=tms0"},
			cmdline: "tms.token=boot-secret-3 tms.disk=/dev/nvme0n1", want: "/dev/nvme0n1"},
		{name: "tms.disk naming no disk is refused", nic: "virtio-net-pci", disk: []string{"-drive", "file=%s,format=raw,if=virtio"},
			cmdline: "tms.disk=/dev/sdb", refusal: "tms.disk=/dev/sdb: no such disk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bootOnce(t, qemu, res, tc.nic, tc.disk, tc.cmdline, tc.want, tc.refusal)
		})
	}
}

// testAgentVersion is stamped into the agent the test builds, and must come back in its boot
// request.
const testAgentVersion = "qemu-test-1"

type boot struct {
	req agentwire.BootRequest
	at  time.Time
}

func bootOnce(t *testing.T, qemu string, res *Result, nic string, diskOpts []string, cmdline, wantDisk, refusal string) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	boots := make(chan boot, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agent/boot", func(w http.ResponseWriter, r *http.Request) {
		var req agentwire.BootRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		boots <- boot{req, time.Now()}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"action":"local"}`))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	const diskSize = 64 << 20
	const mac = "52:54:00:7e:57:01"
	disk := filepath.Join(dir, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	f.Close()

	console := filepath.Join(dir, "console.log")
	args := []string{"-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
		"-serial", "file:" + console, "-monitor", "none",
		"-kernel", res.Kernel, "-initrd", res.Initrd,
		"-append", fmt.Sprintf("console=ttyS0 tms.region=http://10.0.2.2:%d %s", port, cmdline),
		"-netdev", "user,id=n0", "-device", nic + ",netdev=n0,mac=" + mac}
	for _, o := range diskOpts {
		args = append(args, strings.ReplaceAll(o, "%s", disk))
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	failed := func(format string, args ...any) {
		t.Helper()
		b, _ := os.ReadFile(console)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		t.Errorf("serial console: %s; its last lines:\n%s\nqemu said: %s", console, strings.Join(lines[max(0, len(lines)-40):], "\n"), out.String())
		t.Fatalf(format, args...)
	}
	powerOn := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waited := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(waited) }()
	defer func() {
		cancel() // kills QEMU if it still runs
		<-waited
	}()

	if refusal != "" {
		select {
		case b := <-boots:
			failed("the agent ran (boot request %+v) though tms.disk should have been refused", b.req)
		case err := <-exited:
			if err != nil {
				failed("QEMU: %v", err)
			}
		case <-time.After(5 * time.Minute):
			failed("the VM did not reboot within 5 minutes")
		}
		if b, _ := os.ReadFile(console); !bytes.Contains(b, []byte(refusal)) || !bytes.Contains(b, []byte("rebooting in 30 seconds")) {
			failed("the console does not say %q and that the terminal reboots", refusal)
		}
		t.Logf("refused and rebooted %v after power on", time.Since(powerOn).Round(time.Millisecond))
		return
	}

	var got boot
	select {
	case got = <-boots:
	case err := <-exited:
		failed("QEMU exited before the agent's boot request (%v)", err)
	case <-time.After(5 * time.Minute):
		failed("no boot request within 5 minutes of power on")
	}
	t.Logf("power on to boot request (agent running): %v", got.at.Sub(powerOn).Round(time.Millisecond))
	token := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "tms.token="); ok {
			token = v
		}
	}
	want := agentwire.BootRequest{MAC: mac, Disk: wantDisk, DiskSize: diskSize, AgentVersion: testAgentVersion, BootToken: token}
	if got.req != want {
		failed("boot request %+v, want %+v", got.req, want)
	}

	select {
	case err := <-exited:
		if err != nil {
			failed("QEMU: %v", err)
		}
	case <-time.After(2 * time.Minute):
		failed("the VM did not reboot within 2 minutes of its boot request")
	}
	t.Logf("power on to reboot: %v", time.Since(powerOn).Round(time.Millisecond))
	b, _ := os.ReadFile(console)
	if !bytes.Contains(b, []byte("msg=rebooting")) {
		failed("QEMU ended but the console shows no reboot")
	}
	if testing.Verbose() {
		// What the in-memory OS said, without the kernel's messages.
		var ours []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "time=") || strings.HasPrefix(l, "***") {
				ours = append(ours, l)
			}
		}
		t.Logf("the in-memory OS's console:\n%s", strings.Join(ours, "\n"))
	}
}
