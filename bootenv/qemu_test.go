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

	"tms/agent"
)

// TestQEMUBoot boots the built kernel and initrd in QEMU, as a classroom PC network boots
// them, against a region that answers only POST /v1/agent/boot with "local". It passes when
// the boot request arrives with the VM's MAC, its disk and the disk's size, and the VM then
// reboots (which ends QEMU, started with -no-reboot).
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := Build(ctx, Options{Out: filepath.Join(dir, "boot"), Kernel: kernel, ModulesDir: modDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %v: vmlinuz %d bytes, initrd %d bytes, %d modules", time.Since(start).Round(time.Millisecond),
		res.KernelSize, res.InitrdSize, len(res.Modules))

	type boot struct {
		req agent.BootRequest
		at  time.Time
	}
	boots := make(chan boot, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agent/boot", func(w http.ResponseWriter, r *http.Request) {
		var req agent.BootRequest
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
	cmd := exec.CommandContext(ctx, qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
		"-serial", "file:"+console, "-monitor", "none",
		"-kernel", res.Kernel, "-initrd", res.Initrd,
		"-append", fmt.Sprintf("console=ttyS0 tms.region=http://10.0.2.2:%d tms.token=boot-secret-1", port),
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac="+mac,
		"-drive", "file="+disk+",format=raw,if=virtio")
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
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()

	var got boot
	select {
	case got = <-boots:
	case err := <-exited:
		failed("QEMU exited before the agent's boot request (%v)", err)
	case <-time.After(5 * time.Minute):
		failed("no boot request within 5 minutes of power on")
	}
	t.Logf("power on to boot request (agent running): %v", got.at.Sub(powerOn).Round(time.Millisecond))
	want := agent.BootRequest{MAC: mac, Disk: "/dev/vda", DiskSize: diskSize, AgentVersion: agent.Version, BootToken: "boot-secret-1"}
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
	if b, _ := os.ReadFile(console); !bytes.Contains(b, []byte("rebooting")) {
		failed("QEMU ended but the console shows no reboot")
	}
	if testing.Verbose() {
		// What the in-memory OS said, without the kernel's messages.
		b, _ := os.ReadFile(console)
		var ours []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "time=") || strings.HasPrefix(l, "***") {
				ours = append(ours, l)
			}
		}
		t.Logf("the in-memory OS's console:\n%s", strings.Join(ours, "\n"))
	}
}
