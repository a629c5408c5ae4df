package bootenv

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"tms/signing"
)

// cpioEntry is one record read back from a newc archive.
type cpioEntry struct {
	name       string
	mode       uint32
	data       []byte
	rmaj, rmin uint32
	ino, nlink uint32
	mtime, uid uint32
}

// readCPIO parses a newc archive independently of the writer.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off += (4 - off%4) % 4 }
	for {
		if off+110 > len(b) {
			t.Fatalf("archive ends at %d without a trailer", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		e := cpioEntry{ino: field(0), mode: field(1), uid: field(2), nlink: field(4), mtime: field(5), rmaj: field(9), rmin: field(10)}
		size, namesize := int(field(6)), int(field(11))
		off += 110
		e.name = string(b[off : off+namesize-1])
		if b[off+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", e.name)
		}
		off += namesize
		align()
		e.data = b[off : off+size]
		off += size
		align()
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	a := newArchive()
	must(t, a.file("/init", 0o755, []byte("agent")))
	must(t, a.charDev("/dev/console", 0o600, 5, 1))
	must(t, a.file("/lib/modules/6.1/kernel/a.ko", 0o644, []byte("abc"))) // odd size: padding
	must(t, a.dir("/proc", 0o555))
	if err := a.file("/init", 0o755, nil); err == nil {
		t.Error("a file added twice was accepted")
	}
	if err := a.file("/init/x", 0o644, nil); err == nil {
		t.Error("a file under a file was accepted")
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	var names []string
	for _, e := range got {
		names = append(names, e.name)
		if e.mtime != 0 || e.uid != 0 {
			t.Errorf("%s: mtime %d uid %d, want 0", e.name, e.mtime, e.uid)
		}
	}
	want := []string{"dev", "dev/console", "init", "lib", "lib/modules", "lib/modules/6.1", "lib/modules/6.1/kernel", "lib/modules/6.1/kernel/a.ko", "proc"}
	if !slices.Equal(names, want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	byName := map[string]cpioEntry{}
	for _, e := range got {
		byName[e.name] = e
	}
	if e := byName["dev/console"]; e.mode != 0o020600 || e.rmaj != 5 || e.rmin != 1 {
		t.Errorf("console: mode %o dev %d:%d", e.mode, e.rmaj, e.rmin)
	}
	if e := byName["lib/modules/6.1/kernel/a.ko"]; string(e.data) != "abc" || e.mode != 0o100644 {
		t.Errorf("module: mode %o data %q", e.mode, e.data)
	}
	if e := byName["proc"]; e.mode != 0o040555 {
		t.Errorf("proc: mode %o", e.mode)
	}
	if e := byName["init"]; e.mode != 0o100755 || string(e.data) != "agent" {
		t.Errorf("init: mode %o data %q", e.mode, e.data)
	}

	// The system's cpio, where there is one, must read it too.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio -it: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "lib/modules/6.1/kernel/a.ko") {
			t.Errorf("cpio -it lists:\n%s", out)
		}
	}
}

const fakeDep = `kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/net/ethernet/realtek/r8169.ko.zst: kernel/drivers/net/mdio/mdio-devres.ko.zst kernel/drivers/net/phy/libphy.ko.zst
kernel/drivers/net/mdio/mdio-devres.ko.zst: kernel/drivers/net/phy/libphy.ko.zst
kernel/drivers/net/phy/libphy.ko.zst:
kernel/drivers/net/phy/realtek.ko.zst: kernel/drivers/net/phy/libphy.ko.zst
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/drivers/loop/cyc_a.ko: kernel/drivers/loop/cyc_b.ko
kernel/drivers/loop/cyc_b.ko: kernel/drivers/loop/cyc_a.ko
kernel/drivers/bad/needs_ghost.ko: kernel/drivers/bad/ghost.ko
`

const fakeBuiltin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/virtio/virtio.ko\n"
const fakeSoftdep = "# comment\nsoftdep r8169 pre: realtek post: nothing\nsoftdep ahci pre: absent_module\n"

func TestModuleOrder(t *testing.T) {
	ix, err := parseModuleIndex(strings.NewReader(fakeDep), strings.NewReader(fakeBuiltin), strings.NewReader(fakeSoftdep))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		want    []string
		files   []string
		missing []string
		err     string
	}{
		{name: "dependencies come before the module, each once",
			want:  []string{"virtio_net", "net_failover"},
			files: []string{"kernel/net/core/failover.ko.xz", "kernel/drivers/net/net_failover.ko.xz", "kernel/drivers/net/virtio_net.ko.xz"}},
		{name: "built-in modules need no file", want: []string{"virtio_pci", "virtio"}},
		{name: "soft pre-dependencies come first; absent ones are left out",
			want:  []string{"r8169", "ahci"},
			files: []string{"kernel/drivers/net/phy/libphy.ko.zst", "kernel/drivers/net/phy/realtek.ko.zst", "kernel/drivers/net/mdio/mdio-devres.ko.zst", "kernel/drivers/net/ethernet/realtek/r8169.ko.zst", "kernel/drivers/scsi/scsi_mod.ko", "kernel/drivers/ata/libata.ko", "kernel/drivers/ata/libahci.ko", "kernel/drivers/ata/ahci.ko"}},
		{name: "dashes and underscores are the same", want: []string{"mdio_devres"},
			files: []string{"kernel/drivers/net/phy/libphy.ko.zst", "kernel/drivers/net/mdio/mdio-devres.ko.zst"}},
		{name: "a wanted module the kernel lacks is reported", want: []string{"e1000", "failover"},
			files: []string{"kernel/net/core/failover.ko.xz"}, missing: []string{"e1000"}},
		{name: "a cycle is an error", want: []string{"cyc_a"}, err: "cycle"},
		{name: "a dependency modules.dep lacks is an error", want: []string{"needs_ghost"}, err: "ghost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, missing, err := ix.loadOrder(tc.want)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one about %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(files, tc.files) || !slices.Equal(missing, tc.missing) {
				t.Errorf("files %q missing %q\nwant  %q missing %q", files, missing, tc.files, tc.missing)
			}
		})
	}
	if _, err := parseModuleIndex(strings.NewReader("no colon here\n"), nil, nil); err == nil {
		t.Error("a modules.dep line without a colon was accepted")
	}
}

func TestNewestKernel(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"vmlinuz-6.12.9-amd64", "vmlinuz-6.12.10-amd64", "vmlinuz-6.1.0-28-amd64", "config-6.13.0"} {
		must(t, os.WriteFile(filepath.Join(dir, n), nil, 0o644))
	}
	k, err := NewestKernel(dir)
	if err != nil || filepath.Base(k) != "vmlinuz-6.12.10-amd64" {
		t.Errorf("NewestKernel = %q, %v", k, err)
	}
	if _, err := NewestKernel(t.TempDir()); err == nil {
		t.Error("no error without a kernel")
	}
}

// elfModule stands in for a kernel module: it only has to start like an ELF object.
func elfModule(name string) []byte { return []byte("\x7fELF module " + name) }

func compressXZ(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	must(t, err)
	_, err = w.Write(b)
	must(t, err)
	must(t, w.Close())
	return buf.Bytes()
}

func compressZstd(t *testing.T, b []byte) []byte {
	e, err := zstd.NewWriter(nil)
	must(t, err)
	return e.EncodeAll(b, nil)
}

// fakeKernel lays out a kernel and a module directory as Debian's linux-image package does.
func fakeKernel(t *testing.T) (kernel, modDir string) {
	root := t.TempDir()
	kernel = filepath.Join(root, "boot", "vmlinuz-6.12.0-1-amd64")
	modDir = filepath.Join(root, "lib", "modules", "6.12.0-1-amd64")
	must(t, os.MkdirAll(filepath.Dir(kernel), 0o755))
	must(t, os.WriteFile(kernel, []byte("a kernel"), 0o644))
	files := map[string][]byte{
		"kernel/net/core/failover.ko.xz":         compressXZ(t, elfModule("failover")),
		"kernel/drivers/net/net_failover.ko.xz":  compressXZ(t, elfModule("net_failover")),
		"kernel/drivers/net/virtio_net.ko.xz":    compressXZ(t, elfModule("virtio_net")),
		"kernel/drivers/block/virtio_blk.ko.zst": compressZstd(t, elfModule("virtio_blk")),
		"kernel/drivers/nvme/nvme.ko":            elfModule("nvme"),
	}
	dep := "kernel/net/core/failover.ko.xz:\nkernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz\n" +
		"kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz\n" +
		"kernel/drivers/block/virtio_blk.ko.zst:\nkernel/drivers/nvme/nvme.ko:\n"
	files["modules.dep"] = []byte(dep)
	files["modules.builtin"] = []byte("kernel/drivers/virtio/virtio_pci.ko\n")
	for n, b := range files {
		p := filepath.Join(modDir, n)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, b, 0o644))
	}
	return kernel, modDir
}

// staticBinary builds a small static program to stand in for the agent.
func staticBinary(t *testing.T) string {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module fakeagent\n\ngo 1.22\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644))
	out := filepath.Join(dir, "agent")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building a stand-in agent: %v\n%s", err, b)
	}
	return out
}

func TestBuild(t *testing.T) {
	kernel, modDir := fakeKernel(t)
	agentBin := staticBinary(t)
	agentData, err := os.ReadFile(agentBin)
	must(t, err)
	build := func(out string) *Result {
		res, err := Build(context.Background(), Options{Out: out, Kernel: kernel, ModulesDir: modDir, Agent: agentBin,
			Modules: []string{"virtio_pci", "virtio_net", "virtio_blk", "nvme", "e1000"}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	out1, out2 := t.TempDir(), t.TempDir()
	res := build(out1)
	build(out2)

	for _, f := range []string{"vmlinuz", "initrd"} {
		a, err := os.ReadFile(filepath.Join(out1, f))
		must(t, err)
		b, err := os.ReadFile(filepath.Join(out2, f))
		must(t, err)
		if !bytes.Equal(a, b) {
			t.Errorf("two builds wrote different %s", f)
		}
	}
	if k, _ := os.ReadFile(res.Kernel); string(k) != "a kernel" {
		t.Errorf("vmlinuz holds %q", k)
	}
	if !slices.Equal(res.Missing, []string{"e1000"}) {
		t.Errorf("missing %q, want e1000", res.Missing)
	}

	raw, err := os.ReadFile(res.Initrd)
	must(t, err)
	if int64(len(raw)) != res.InitrdSize {
		t.Errorf("InitrdSize %d, file has %d bytes", res.InitrdSize, len(raw))
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	must(t, err)
	cp, err := io.ReadAll(zr)
	must(t, err)
	files := map[string]cpioEntry{}
	for _, e := range readCPIO(t, cp) {
		files["/"+e.name] = e
	}
	if e := files["/init"]; !bytes.Equal(e.data, agentData) || e.mode != 0o100755 {
		t.Errorf("/init: mode %o, %d bytes (agent has %d)", e.mode, len(e.data), len(agentData))
	}
	if e, ok := files["/dev/console"]; !ok || e.mode&0o170000 != 0o020000 {
		t.Errorf("/dev/console missing or not a character device")
	}
	for _, d := range []string{"/proc", "/sys", "/dev", "/run"} {
		if e := files[d]; e.mode&0o170000 != 0o040000 {
			t.Errorf("%s is not a directory", d)
		}
	}
	base := "/lib/modules/6.12.0-1-amd64/kernel/drivers/"
	wantOrder := []string{
		"/lib/modules/6.12.0-1-amd64/kernel/net/core/failover.ko",
		base + "net/net_failover.ko", base + "net/virtio_net.ko", base + "block/virtio_blk.ko", base + "nvme/nvme.ko",
	}
	manifest := strings.Fields(string(files[ModulesManifest].data))
	if !slices.Equal(manifest, wantOrder) || !slices.Equal(res.Modules, wantOrder) {
		t.Errorf("manifest %q, want %q", manifest, wantOrder)
	}
	for _, m := range wantOrder {
		name := strings.TrimSuffix(filepath.Base(m), ".ko")
		if got := string(files[m].data); got != string(elfModule(name)) {
			t.Errorf("%s holds %q, want it decompressed", m, got)
		}
	}
}

// TestBuildEmbedsTrust checks that the central key and the CA certificates given to Build are
// in the initrd where the agent reads them, that a build without a key still succeeds (with
// no key file, so its agent refuses deploys), and that a CA file without certificates is
// refused.
func TestBuildEmbedsTrust(t *testing.T) {
	kernel, modDir := fakeKernel(t)
	agentBin := staticBinary(t)
	k, err := signing.GenerateKey()
	must(t, err)
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	must(t, os.WriteFile(ca, caPEM, 0o644))
	initrd := func(o Options) (*Result, map[string]cpioEntry, error) {
		o.Out, o.Kernel, o.ModulesDir, o.Agent, o.Modules = t.TempDir(), kernel, modDir, agentBin, []string{"nvme"}
		res, err := Build(context.Background(), o)
		if err != nil {
			return nil, nil, err
		}
		raw, err := os.ReadFile(res.Initrd)
		must(t, err)
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		must(t, err)
		cp, err := io.ReadAll(zr)
		must(t, err)
		files := map[string]cpioEntry{}
		for _, e := range readCPIO(t, cp) {
			files["/"+e.name] = e
		}
		return res, files, nil
	}

	res, files, err := initrd(Options{CentralKey: k.Public(), CAFile: ca})
	must(t, err)
	if res.CentralKeyID != k.Public().ID() || res.CACerts != 1 {
		t.Errorf("result: key %q, %d CA certificates", res.CentralKeyID, res.CACerts)
	}
	if got, err := signing.ParsePublicKey(string(files[CentralKeyPath].data)); err != nil || !got.Equal(k.Public()) {
		t.Errorf("%s holds %q (%v)", CentralKeyPath, files[CentralKeyPath].data, err)
	}
	if !bytes.Equal(files[CAPath].data, caPEM) {
		t.Errorf("%s holds %q", CAPath, files[CAPath].data)
	}

	res, files, err = initrd(Options{})
	must(t, err)
	if _, ok := files[CentralKeyPath]; ok || res.CentralKeyID != "" {
		t.Errorf("a build without a key has %s", CentralKeyPath)
	}
	if _, ok := files[CAPath]; ok {
		t.Errorf("a build without a CA has %s", CAPath)
	}

	bad := filepath.Join(t.TempDir(), "bad.pem")
	must(t, os.WriteFile(bad, []byte("not a certificate\n"), 0o644))
	if _, _, err := initrd(Options{CentralKey: k.Public(), CAFile: bad}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without certificates: %v", err)
	}
}

func TestBuildRefusesDynamicAgent(t *testing.T) {
	kernel, modDir := fakeKernel(t)
	sh, err := exec.LookPath("sh") // dynamically linked on Debian
	if err != nil {
		t.Skip("no sh")
	}
	if checkStatic(sh) == nil {
		t.Skipf("%s is static here", sh)
	}
	_, err = Build(context.Background(), Options{Out: t.TempDir(), Kernel: kernel, ModulesDir: modDir, Agent: sh})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("err %v, want a refusal of a dynamic agent", err)
	}
}

func TestReadModuleRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "bad.ko.xz"), compressXZ(t, []byte("not elf")), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "trunc.ko.zst"), compressZstd(t, elfModule("x"))[:8], 0o644))
	for _, n := range []string{"bad.ko.xz", "trunc.ko.zst", "absent.ko"} {
		if _, _, err := readModule(dir, n); err == nil {
			t.Errorf("%s: no error", n)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestAgentLinksNoServerCode keeps the initrd's /init small and static: the agent must not
// pull in Temporal, SQLite or cgo.
func TestAgentLinksNoServerCode(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{if .CgoFiles}}cgo{{end}}", "tms/cmd/tms-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, cgo, _ := strings.Cut(line, " ")
		if strings.Contains(pkg, "temporal") || strings.Contains(pkg, "sqlite") || pkg == "modernc.org/libc" || cgo == "cgo" {
			t.Errorf("the agent links %s %s", pkg, cgo)
		}
	}
}
