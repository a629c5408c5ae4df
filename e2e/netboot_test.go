//go:build netboot

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tms/activities"
	"tms/agentwire"
	"tms/bootenv"
	"tms/config"
	"tms/devtemporal"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/server"
	"tms/signing"
	"tms/workflows"
)

// childEnv, when set, makes TestNetboot run the scenario: the process is inside the namespace.
// dirEnv and bootEnv name the parent's temporary directory and the in-memory OS's directory.
const (
	childEnv = "TMS_E2E_CHILD"
	dirEnv   = "TMS_E2E_DIR"
	bootEnv  = "TMS_E2E_BOOTENV"
	pcEnv    = "TMS_E2E_PC"
)

const (
	regionID = "lab-1"
	listen   = regionIP + ":8301"
	endpoint = "http://" + listen
	diskSize = 64 << 20
	mac1     = "52:54:00:e2:e0:01"
	mac2     = "52:54:00:e2:e0:02"
	pcMAC    = "02:77:00:e2:e0:03" // the stand-in PXE ROM (busybox udhcpc)
	image    = "lab"
)

// claimQuiet is how long a network boot's claim stands before the region takes its task's result.
const claimQuiet = 45 * time.Second

// timeouts: a TCG boot takes tens of seconds, so the agent's silence may last minutes.
var timeouts = workflows.AgentTimeouts{Silence: 4 * time.Minute, Tries: 2, Total: 20 * time.Minute}

// TestNetboot captures a QEMU terminal's disk through network boot and deploys it to a second
// one, then checks that the deployed terminal is sent to its own disk. See the package doc.
func TestNetboot(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		scenario(t, os.Getenv(dirEnv), os.Getenv(bootEnv), os.Getenv(pcEnv))
		return
	}
	needRoot(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
	}
	if out, err := exec.Command("busybox", "udhcpc", "--help").CombinedOutput(); !bytes.Contains(out, []byte("udhcpc")) {
		t.Skipf("needs busybox with udhcpc (Debian: busybox-static): %v", err)
	}
	for _, f := range []string{"/usr/lib/ipxe/qemu/pxe-virtio.rom", "/usr/lib/ipxe/undionly.kpxe"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("iPXE is missing (Debian: ipxe, ipxe-qemu): %v", err)
		}
	}
	kernel, err := bootenv.NewestKernel("/boot")
	if err != nil {
		t.Skipf("no kernel to boot: %v (Debian: linux-image-amd64)", err)
	}
	// Kept when the test fails, for the serial consoles and the region's data.
	dir, err := os.MkdirTemp("", "tms-netboot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s (serial consoles *.console, disks, the region's data)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	// Central's key: the in-memory OS gets its public half, the scenario's central signs with it.
	key, err := signing.CreateKeyFile(filepath.Join(dir, "central.key"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := bootenv.Build(context.Background(), bootenv.Options{Out: filepath.Join(dir, "bootenv"), Kernel: kernel, AgentVersion: "netboot-e2e",
		CentralKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("in-memory OS built in %v: vmlinuz %d bytes, initrd %d bytes", time.Since(start).Round(time.Millisecond), res.KernelSize, res.InitrdSize)

	seg := newSegment(t, 2)
	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Minute)
	}
	// The child ends a minute before this test would be killed, so cleanups still run here.
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", seg.NS, os.Args[0], "-test.run=^TestNetboot$", "-test.v",
		"-test.timeout="+time.Until(deadline.Add(-90*time.Second)).Round(time.Second).String())
	cmd.Env = append(os.Environ(), childEnv+"=1", dirEnv+"="+dir, bootEnv+"="+filepath.Join(dir, "bootenv"), pcEnv+"="+seg.PC)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.WaitDelay = 10 * time.Second
	// A killed test takes the scenario, and with it QEMU, along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		consoles, _ := filepath.Glob(filepath.Join(dir, "*.console"))
		t.Fatalf("the scenario in namespace %s failed: %v; serial consoles: %s", seg.NS, err, strings.Join(consoles, " "))
	}
}

// scenario runs inside the namespace: Temporal, central, the region with its boot service,
// then capture, deploy and local boot with QEMU terminals.
func scenario(t *testing.T, dir, bootDir, pcNS string) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	tsrv, err := devtemporal.Start(devtemporal.Options{Log: log, Level: slog.LevelError})
	if err != nil {
		t.Fatal(err)
	}
	defer tsrv.Stop()
	c, err := client.Dial(client.Options{HostPort: tsrv.Address(),
		Logger: tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, err := signing.LoadKeyFile(filepath.Join(dir, "central.key"))
	if err != nil {
		t.Fatal(err)
	}
	central, err := server.StartCentral(ctx, server.CentralOptions{DataDir: filepath.Join(dir, "central"), Key: key, Client: c, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer central.Stop()
	rec := &recorder{}
	r, err := server.StartRegion(ctx, server.RegionOptions{ID: regionID, DataDir: filepath.Join(dir, regionID), Listen: listen, Endpoint: endpoint,
		CentralKey: key.Public(), Client: c, Log: log, Wrap: rec.wrap,
		Boot: config.Boot{Enabled: true, Interface: bridge, Address: regionIP, DHCP: "full", Pool: "10.99.0.100-10.99.0.150",
			Subnet: "10.99.0.0/24", TFTPDir: "/usr/lib/ipxe", Dir: bootDir, KernelArgs: "console=ttyS0", ClaimQuiet: claimQuiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	t.Logf("region %s up at %s with its boot service on %s", regionID, endpoint, bridge)

	disk1, disk2 := filepath.Join(dir, "disk1.raw"), filepath.Join(dir, "disk2.raw")
	if err := sampledisk.Write(disk1, sampledisk.Options{Size: diskSize, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := writeBootMarker(disk1); err != nil {
		t.Fatal(err)
	}
	if err := blankDisk(disk2, diskSize); err != nil {
		t.Fatal(err)
	}
	// Full DHCP leases to enrolled terminals only: the stand-in PC is one too.
	ipCmd(t, "-n", pcNS, "link", "set", pcIf, "down")
	ipCmd(t, "-n", pcNS, "link", "set", pcIf, "address", pcMAC)
	ipCmd(t, "-n", pcNS, "link", "set", pcIf, "up")
	for _, e := range []struct{ mac, name string }{{mac1, "vm1"}, {mac2, "vm2"}, {pcMAC, "pc0"}} {
		if err := r.Inventory.Enroll(ctx, e.mac, e.name); err != nil {
			t.Fatal(err)
		}
	}

	// 0. A BIOS PXE ROM's path, which QEMU's iPXE ROM skips: busybox udhcpc, saying it is
	// a PXE client, must get an address and undionly.kpxe, and TFTP must serve that file.
	var pcIP string
	t.Run("dhcp and tftp", func(t *testing.T) { pcIP = pxeClient(ctx, t, dir, pcNS) })

	// 0b. The in-memory OS as a published version: rolled out to the region with vm2 as its
	// canary, which PXE boots the version (its script names /boot/VERSION/ and tms.bootenv),
	// says so, and reboots. Every later boot of this scenario boots that version.
	t.Run("bootenv rollout", func(t *testing.T) {
		pub, err := bootenv.Publish(ctx, r.Store, bootDir, bootenv.PublishOptions{Name: "e2e", AgentVersion: "netboot-e2e"})
		if err != nil {
			t.Fatal(err)
		}
		v := pub.Version
		info := activities.VersionInfo{Version: v.ID.String(), Name: pub.Image, Created: v.Manifest.Meta.Created, DiskSize: v.Manifest.DiskSize,
			ChunkSize: v.Manifest.ChunkSize, StoredBytes: pub.Import.Stats.StoredBytes}
		prun, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.CentralQueue}, workflows.PublishBootEnv,
			activities.RegisterBootEnvInput{Info: info, Region: regionID, KernelVersion: pub.Info.KernelVersion, AgentVersion: "netboot-e2e"})
		if err != nil {
			t.Fatal(err)
		}
		if err := prun.Get(ctx, nil); err != nil {
			t.Fatalf("publish: %v", err)
		}
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.BootEnvRolloutWorkflowID(v.ID.String()), TaskQueue: activities.CentralQueue},
			workflows.BootEnvRollout, workflows.BootEnvRolloutInput{Version: v.ID.String(), Regions: []string{regionID}, Canaries: []string{"vm2"}, CanaryTimeout: 8 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		waitBootAction(ctx, t, r, mac2, agentwire.ActionProbe)
		vm := startVM(t, dir, "vm2-probe", "tap1", mac2, disk2, true)
		var res workflows.BootEnvRolloutResult
		if err := run.Get(ctx, &res); err != nil {
			vm.fail(t, "rollout: %v", err)
		}
		if len(res.Regions) != 1 || res.Regions[0].Phase != workflows.RolloutDone || res.Regions[0].Canary != "vm2" || res.Regions[0].AgentVersion == "" {
			vm.fail(t, "rollout result %+v", res)
		}
		vm.waitExit(t, 2*time.Minute)
		if st, err := r.BootEnv(ctx); err != nil || st.Current != v.ID.String() || !st.Ready {
			t.Fatalf("the region's bootenv after the rollout: %+v %v", st, err)
		}
		if b, _ := os.ReadFile(vm.console); !bytes.Contains(b, []byte("tms.bootenv="+v.ID.String())) {
			t.Logf("vm2's console does not show tms.bootenv on its kernel command line (the kernel may not print it)")
		}
		t.Logf("bootenv %s rolled out: canary vm2 booted it and came back in %v", v.ID.Short(), time.Since(vm.start).Round(time.Second))
	})
	if t.Failed() {
		return
	}

	// 1. Capture vm1.
	var capRes workflows.CaptureImageResult
	t.Run("capture", func(t *testing.T) {
		run := startTask(ctx, t, c, r, mac1, workflows.CaptureWorkflowID(regionID, "vm1", image), workflows.CaptureImage,
			workflows.CaptureImageInput{Region: regionID, TerminalRef: "vm1", Image: image, Timeouts: timeouts})
		vm := startVM(t, dir, "vm1-capture", "tap0", mac1, disk1, true)
		if err := run.Get(ctx, &capRes); err != nil {
			vm.fail(t, "capture: %v", err)
		}
		done := time.Now()
		boot := rec.first(mac1, "agent-boot", vm.start)
		script := rec.first(mac1, "task-script", vm.start)
		if boot.IsZero() {
			vm.fail(t, "the capture finished but the region saw no boot request from the agent")
		}
		// The agent's boot request recorded the disk it found in the region's inventory.
		if term, err := r.Inventory.Terminal(ctx, "vm1"); err != nil || term.Disk != "/dev/vda" || term.DiskSize != diskSize || term.LastSeen.Before(vm.start) {
			vm.fail(t, "vm1 in the inventory: %+v (%v), want disk /dev/vda of %d bytes, seen since power on", term, err, diskSize)
		}
		t.Logf("vm1: power on → task script %v, → agent's boot request %v; capture %v, %.1f MB/s of disk (version %s, %d bytes stored)",
			script.Sub(vm.start).Round(time.Millisecond), boot.Sub(vm.start).Round(time.Millisecond), done.Sub(boot).Round(time.Millisecond),
			mbps(diskSize, done.Sub(boot)), capRes.Version, capRes.StoredBytes)
		vm.waitExit(t, 2*time.Minute)
	})
	if capRes.Version == "" {
		t.FailNow()
	}

	// 2. Deploy the image to vm2.
	t.Run("deploy", func(t *testing.T) {
		run := startTask(ctx, t, c, r, mac2, workflows.DeployWorkflowID(regionID, "", []string{"vm2"}, image), workflows.DeployImage, deployVM2)
		vm := startVM(t, dir, "vm2-deploy", "tap1", mac2, disk2, true)
		var res workflows.DeployImageResult
		if err := run.Get(ctx, &res); err != nil {
			vm.fail(t, "deploy: %v", err)
		}
		done := time.Now()
		if res.Failed != 0 || len(res.Terminals) != 1 || !res.Terminals[0].OK {
			vm.fail(t, "deploy result: %+v", res)
		}
		boot := rec.first(mac2, "agent-boot", vm.start)
		t.Logf("vm2: power on → agent's boot request %v; deploy %v, %.1f MB/s of disk (%d chunks written, %d bytes, %d skipped)",
			boot.Sub(vm.start).Round(time.Millisecond), done.Sub(boot).Round(time.Millisecond), mbps(diskSize, done.Sub(boot)),
			res.Terminals[0].Written, res.Terminals[0].WrittenBytes, res.Terminals[0].Skipped)
		vm.waitExit(t, 2*time.Minute)
		a, err := os.ReadFile(disk1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(disk2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s and %s differ after the deploy", disk1, disk2)
		}
		t.Logf("disk2.raw is byte-identical to disk1.raw (%d bytes)", len(a))
	})
	if t.Failed() {
		return
	}

	// 3. vm2 has nothing to do now: its script sends it to its own disk.
	t.Run("local boot", func(t *testing.T) {
		vm := startVM(t, dir, "vm2-local", "tap1", mac2, disk2, true)
		defer vm.kill()
		deadline := time.Now().Add(3 * time.Minute)
		for rec.first(mac2, "local-script", vm.start).IsZero() {
			if time.Now().After(deadline) {
				vm.fail(t, "no local-disk script served to vm2 within 3 minutes")
			}
			time.Sleep(500 * time.Millisecond)
		}
		served := rec.first(mac2, "local-script", vm.start)
		// Give iPXE time to run the script; then the console must show it.
		for time.Now().Before(served.Add(30 * time.Second)) {
			if b, _ := os.ReadFile(vm.console); bytes.Contains(b, []byte("booting from the local disk")) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(5 * time.Second)
		b, _ := os.ReadFile(vm.console)
		t.Logf("vm2: power on → local-disk script %v; console %s ends:\n%s", served.Sub(vm.start).Round(time.Millisecond), vm.console, tail(b, 15))
		// The deployed disk's own boot code (the captured disk's, see writeBootMarker) prints
		// the marker: the PC booted from its disk, not from the network.
		for time.Now().Before(served.Add(60*time.Second)) && !bytes.Contains(b, []byte(bootMarker)) {
			time.Sleep(500 * time.Millisecond)
			b, _ = os.ReadFile(vm.console)
		}
		if !bytes.Contains(b, []byte("booting from the local disk")) || !bytes.Contains(b, []byte(bootMarker)) {
			vm.fail(t, "iPXE was served the local-disk script but the console does not show the disk's own boot code running")
		}
		t.Logf("vm2 booted its own disk: its boot code printed %q", bootMarker)
		if !rec.first(mac2, "agent-boot", vm.start).IsZero() {
			vm.fail(t, "vm2 started the in-memory OS though it had nothing to do")
		}
	})
	if t.Failed() {
		return
	}

	// 4. vm1's disk changes; a capture makes it version 2, and an update brings vm2, which holds
	// version 1, to it incrementally: only the changed chunks fetched, written and read back.
	latest := capRes.Version
	t.Run("update", func(t *testing.T) {
		f, err := os.OpenFile(disk1, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		change := bytes.Repeat([]byte("changed by the update step "), 2400) // 64.8 KB, in the middle of the disk
		if _, err := f.WriteAt(change, diskSize/2+4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		run := startTask(ctx, t, c, r, mac1, workflows.CaptureWorkflowID(regionID, "vm1", image), workflows.CaptureImage,
			workflows.CaptureImageInput{Region: regionID, TerminalRef: "vm1", Image: image, Timeouts: timeouts})
		vm := startVM(t, dir, "vm1-capture2", "tap0", mac1, disk1, true)
		var cap2 workflows.CaptureImageResult
		if err := run.Get(ctx, &cap2); err != nil {
			vm.fail(t, "second capture: %v", err)
		}
		vm.waitExit(t, 2*time.Minute)
		latest = cap2.Version

		in := workflows.UpdateImageInput{Region: regionID, Terminals: []string{"vm2"}, Image: image, Timeouts: timeouts}
		urun := startTask(ctx, t, c, r, mac2, workflows.UpdateWorkflowID(regionID, "", []string{"vm2"}, image), workflows.UpdateImage, in)
		vm = startVM(t, dir, "vm2-update", "tap1", mac2, disk2, true)
		var res workflows.UpdateImageResult
		if err := urun.Get(ctx, &res); err != nil {
			vm.fail(t, "update: %v", err)
		}
		done := time.Now()
		if len(res.Terminals) != 1 || !res.Terminals[0].OK || res.Terminals[0].Decision != "incremental" {
			vm.fail(t, "update result: %+v", res)
		}
		vm.waitExit(t, 2*time.Minute)
		o := res.Terminals[0]
		// The change spans at most two chunks.
		if o.FetchedBytes <= 0 || o.FetchedBytes > 2*manifest.MaxChunkSize {
			t.Fatalf("the update fetched %d bytes for a change of %d", o.FetchedBytes, len(change))
		}
		boot := rec.first(mac2, "agent-boot", vm.start)
		t.Logf("vm2: power on → agent's boot request %v; incremental update %v (%s; %d bytes fetched, %d written)",
			boot.Sub(vm.start).Round(time.Millisecond), done.Sub(boot).Round(time.Millisecond), o.Reason, o.FetchedBytes, o.WrittenBytes)
		a, _ := os.ReadFile(disk1)
		b, _ := os.ReadFile(disk2)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s and %s differ after the update", disk1, disk2)
		}
		if term, err := r.Inventory.Terminal(ctx, "vm2"); err != nil || term.Version.String() != latest {
			t.Fatalf("vm2's recorded version after the update: %+v (%v), want %s", term.Version, err, latest)
		}
	})
	if t.Failed() || pcIP == "" {
		return
	}

	// 5. A PC on the segment with vm1's MAC and its own address claims vm1's capture before vm1
	// boots; then a PC with vm2's MAC claims vm2's deploy. Neither gets anything taken: each task
	// fails when the real terminal boots, naming both addresses, and nothing is published or
	// marked done.
	t.Run("spoofer", func(t *testing.T) {
		run := startTask(ctx, t, c, r, mac1, workflows.CaptureWorkflowID(regionID, "vm1", image), workflows.CaptureImage,
			workflows.CaptureImageInput{Region: regionID, TerminalRef: "vm1", Image: image, Timeouts: timeouts})
		spoofer := spoof(ctx, t, pcNS, mac1, "capture")
		vm := startVM(t, dir, "vm1-spoofed", "tap0", mac1, disk1, true)
		err := run.Get(ctx, nil)
		vm.kill()
		if err == nil || !strings.Contains(err.Error(), "two machines") || !strings.Contains(err.Error(), pcIP) {
			vm.fail(t, "capture with a spoofer: %v; want it failed naming the spoofer's address %s", err, pcIP)
		}
		if id, err := r.Store.GetTag(ctx, image, "latest"); err != nil || id.String() != latest {
			t.Fatalf("%s:latest is %s (%v) after the spoofed capture; want the last capture's %s", image, id, err, latest)
		}
		t.Logf("capture with a spoofer at %s failed as it must: %v (the spoofer was told %s)", pcIP, err, spoofer)

		before, _ := os.ReadFile(disk2)
		drun := startTask(ctx, t, c, r, mac2, workflows.DeployWorkflowID(regionID, "", []string{"vm2"}, image), workflows.DeployImage, deployVM2)
		spoofer = spoof(ctx, t, pcNS, mac2, "deploy")
		vm = startVM(t, dir, "vm2-spoofed", "tap1", mac2, disk2, true)
		err = drun.Get(ctx, nil)
		vm.kill()
		if err == nil || !strings.Contains(err.Error(), "two machines") || !strings.Contains(err.Error(), pcIP) {
			vm.fail(t, "deploy with a spoofer: %v; want it failed naming the spoofer's address %s", err, pcIP)
		}
		t.Logf("deploy with a spoofer at %s failed as it must: %v (the spoofer was told %s)", pcIP, err, spoofer)
		if after, _ := os.ReadFile(disk2); !bytes.Equal(before, after) {
			t.Fatal("vm2's disk changed in a deploy that two machines claimed")
		}
	})
}

// spoof plays a PC of the segment that forges mac: it asks for mac's iPXE script, boots the
// in-memory OS's protocol with the token it finds there, and tries to end the task at once (a
// capture publishes a manifest, a deploy reports a verified disk). It returns what the region
// answered that last request; the region must not take it.
func spoof(ctx context.Context, t *testing.T, pcNS, mac, kind string) string {
	t.Helper()
	curl := func(args ...string) string {
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", pcNS, "curl", "-sS", "--max-time", "20"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	script := curl(endpoint + "/boot/ipxe?mac=" + mac)
	_, tok, ok := strings.Cut(script, "tms.token=")
	if !ok {
		t.Fatalf("the spoofer got no task script for %s:\n%s", mac, script)
	}
	tok, _, _ = strings.Cut(tok, "\n")
	tok = strings.Fields(tok)[0]
	var boot struct{ Action, Token string }
	out := curl("-X", "POST", "-H", "Content-Type: application/json", "-d",
		`{"mac":"`+mac+`","disk":"/dev/vda","disk_size":`+strconv.Itoa(diskSize)+`,"boot_token":"`+tok+`"}`, endpoint+"/v1/agent/boot")
	if err := json.Unmarshal([]byte(out), &boot); err != nil || boot.Action != kind || boot.Token == "" {
		t.Fatalf("the spoofer's boot request: %s", out)
	}
	auth := []string{"-H", "Authorization: Bearer " + boot.Token, "-H", "Tms-Terminal: " + mac, "-w", " %{http_code}"}
	if kind == "capture" {
		return curl(append(auth, "-X", "PUT", "-H", "Content-Type: application/json", "-d", `{"format":"tms.manifest/1"}`, endpoint+"/v1/agent/task/manifest")...)
	}
	return curl(append(auth, "-X", "POST", "-H", "Content-Type: application/json", "-d", `{"written":1,"verified":true}`, endpoint+"/v1/agent/task/done")...)
}

// pxeClient runs busybox's DHCP client as a BIOS PXE ROM in namespace pcNS, then fetches the
// boot file it was given over TFTP and compares it with iPXE's.
func pxeClient(ctx context.Context, t *testing.T, dir, pcNS string) string {
	script := filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"event=$1\"\n[ \"$1\" = bound ] && env\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", pcNS, "busybox", "udhcpc", "-i", pcIf, "-n", "-q", "-f", "-t", "5", "-T", "2",
		"-V", "PXEClient:Arch:00000:UNDI:002001", "-s", script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // the script prints only what udhcpc sets
	out, err := cmd.CombinedOutput()
	env := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	if err != nil || env["event"] != "bound" {
		t.Fatalf("udhcpc got no lease: %v\n%s", err, out)
	}
	if !strings.HasPrefix(env["ip"], "10.99.0.") || env["boot_file"] != "undionly.kpxe" || env["siaddr"] != regionIP {
		t.Fatalf("udhcpc got address %q, boot file %q from %q; want one of the pool and undionly.kpxe from %s\n%s",
			env["ip"], env["boot_file"], env["siaddr"], regionIP, out)
	}
	if out, err := exec.Command("ip", "-n", pcNS, "addr", "add", env["ip"]+"/24", "dev", pcIf).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v\n%s", err, out)
	}
	got := filepath.Join(dir, "undionly.kpxe")
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", pcNS, "busybox", "tftp", "-g", "-b", "1468", "-l", got, "-r", env["boot_file"], env["siaddr"]).CombinedOutput(); err != nil {
		t.Fatalf("busybox tftp: %v\n%s", err, out)
	}
	took := time.Since(start)
	a, _ := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
	b, err := os.ReadFile(got)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("TFTP gave %d bytes (%v), want /usr/lib/ipxe/undionly.kpxe's %d", len(b), err, len(a))
	}
	t.Logf("udhcpc as a PXE ROM got %s and %s from %s; TFTP fetched it (%d bytes) in %v", env["ip"], env["boot_file"], env["siaddr"], len(b), took.Round(time.Millisecond))
	return env["ip"]
}

// deployVM2 is the deploy of the captured image to vm2.
var deployVM2 = workflows.DeployImageInput{Region: regionID, Terminals: []string{"vm2"}, Image: image, Timeouts: timeouts}

// startTask starts a capture or deploy workflow on the region's queue and waits until it has set
// mac's boot action, so that the VM powered on next gets the task script.
func startTask(ctx context.Context, t *testing.T, c client.Client, r *server.Region, mac, id string, wf, in any) client.WorkflowRun {
	t.Helper()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: activities.RegionQueue(regionID)}, wf, in)
	if err != nil {
		t.Fatal(err)
	}
	action := agentwire.ActionDeploy
	switch in.(type) {
	case workflows.CaptureImageInput:
		action = agentwire.ActionCapture
	case workflows.UpdateImageInput:
		action = agentwire.ActionUpdate
	}
	waitBootAction(ctx, t, r, mac, action)
	return run
}

// waitBootAction waits until the workflow has set mac's boot action, so that the VM's DHCP
// request already gets the task script.
func waitBootAction(ctx context.Context, t *testing.T, r *server.Region, mac string, action agentwire.Action) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		a, err := r.Inventory.BootAction(ctx, mac, time.Now())
		if err == nil && a.Action == action {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's boot action is %+v (%v) two minutes after the workflow started, want %s", mac, a, err, action)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func blankDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// vm is a running QEMU terminal.
type vm struct {
	name, console string
	start         time.Time
	cmd           *exec.Cmd
	out           *bytes.Buffer
	exited        chan error
}

// startVM powers a terminal on: QEMU with software emulation, its NIC on tap, booting from
// the network through QEMU's own iPXE ROM, its serial console in DIR/NAME.console.
func startVM(t *testing.T, dir, name, tap, mac, disk string, noReboot bool) *vm {
	t.Helper()
	v := &vm{name: name, console: filepath.Join(dir, name+".console"), out: &bytes.Buffer{}, exited: make(chan error, 1)}
	args := []string{"-accel", "tcg", "-m", "768", "-nographic", "-serial", "file:" + v.console, "-monitor", "none",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac,
		"-drive", "file=" + disk + ",format=raw,if=virtio", "-boot", "n"}
	if noReboot {
		args = append(args, "-no-reboot")
	}
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.out
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	v.start = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.exited <- v.cmd.Wait() }()
	t.Cleanup(v.kill)
	t.Logf("%s powered on (console %s)", name, v.console)
	return v
}

func (v *vm) kill() {
	if v.cmd.ProcessState == nil {
		v.cmd.Process.Kill()
	}
}

// waitExit waits for the VM's reboot, which ends QEMU (-no-reboot).
func (v *vm) waitExit(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case err := <-v.exited:
		if err != nil {
			v.fail(t, "QEMU: %v", err)
		}
		t.Logf("%s rebooted %v after power on", v.name, time.Since(v.start).Round(time.Millisecond))
	case <-time.After(d):
		v.fail(t, "%s did not reboot within %v", v.name, d)
	}
}

// fail ends the test with the console's path and its last lines.
func (v *vm) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	b, _ := os.ReadFile(v.console)
	t.Errorf("%s's serial console: %s; its last lines:\n%s\nqemu said: %s", v.name, v.console, tail(b, 40), v.out.String())
	t.Fatalf(format, args...)
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// recorder notes, with their times, the requests of network-booting terminals that the
// region's HTTP service answers: iPXE scripts (task or local disk) and the agents' boot
// requests.
type recorder struct {
	mu     sync.Mutex
	events []event
}

type event struct {
	at   time.Time
	mac  string
	kind string // task-script, local-script, agent-boot
}

func (rc *recorder) add(mac, kind string) {
	rc.mu.Lock()
	rc.events = append(rc.events, event{time.Now(), strings.ToLower(mac), kind})
	rc.mu.Unlock()
}

// first returns when mac's first request of kind after since came, or zero.
func (rc *recorder) first(mac, kind string, since time.Time) time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, e := range rc.events {
		if e.mac == mac && e.kind == kind && !e.at.Before(since) {
			return e.at
		}
	}
	return time.Time{}
}

func (rc *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/boot/ipxe":
			cw := &captureWriter{ResponseWriter: w}
			h.ServeHTTP(cw, r)
			kind := "local-script"
			if bytes.Contains(cw.body.Bytes(), []byte("\nkernel ")) {
				kind = "task-script"
			}
			rc.add(r.URL.Query().Get("mac"), kind)
			return
		case r.Method == http.MethodPost && r.URL.Path == "/v1/agent/boot":
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			var req struct {
				MAC string `json:"mac"`
			}
			json.Unmarshal(body, &req)
			rc.add(req.MAC, "agent-boot")
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	})
}

type captureWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (c *captureWriter) Write(b []byte) (int, error) {
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}

// bootMarker is what the captured disk's boot code prints on the serial port.
const bootMarker = "TMS-LOCAL-DISK-BOOTED"

// writeBootMarker puts boot code in the disk's MBR (bytes 0-439, before the partition table,
// which it leaves alone) that writes bootMarker to COM1 and halts, and the boot signature.
// Captured from vm1 and deployed to vm2, it shows vm2 booting from its own disk.
func writeBootMarker(path string) error {
	code := []byte{
		0xfa,       // cli
		0x31, 0xc0, // xor ax, ax
		0x8e, 0xd8, // mov ds, ax
		0xbe, 0x16, 0x7c, // mov si, 0x7c16 (the message below)
		0xba, 0xf8, 0x03, // mov dx, 0x3f8 (COM1)
		0xac,       // next: lodsb
		0x84, 0xc0, // test al, al
		0x74, 0x03, // jz halt
		0xee,       // out dx, al
		0xeb, 0xf8, // jmp next
		0xf4,       // halt: hlt
		0xeb, 0xfd, // jmp halt
	}
	code = append(code, "\r\n"+bootMarker+"\r\n\x00"...)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return err
	}
	copy(mbr, code)
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return err
	}
	return f.Sync()
}
