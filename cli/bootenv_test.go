package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"tms/signing"
)

func TestBootenvBuild(t *testing.T) {
	run := newRunner(nil)
	if code, _, errs := run("bootenv", "build"); code != 2 || !regexp.MustCompile(`--out is required`).MatchString(errs) {
		t.Errorf("without --out: exit %d, %s", code, errs)
	}

	// A kernel and module directory laid out as Debian's, and a small static program for the agent.
	root := t.TempDir()
	kernel := filepath.Join(root, "vmlinuz-6.1.0-9-amd64")
	modDir := filepath.Join(root, "modules", "6.1.0-9-amd64")
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(kernel, "kernel")
	write(filepath.Join(modDir, "modules.dep"), "kernel/drivers/net/virtio_net.ko:\n")
	write(filepath.Join(modDir, "kernel/drivers/net/virtio_net.ko"), "\x7fELF")
	src := filepath.Join(root, "agent")
	write(filepath.Join(src, "go.mod"), "module fakeagent\n\ngo 1.22\n")
	write(filepath.Join(src, "main.go"), "package main\n\nfunc main() {}\n")
	agentBin := filepath.Join(src, "tms-agent")
	cmd := exec.Command("go", "build", "-o", agentBin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building a stand-in agent: %v\n%s", err, b)
	}

	out := filepath.Join(root, "boot")
	code, stdout, errs := run("bootenv", "build", "--out", out, "--kernel", kernel, "--modules-dir", modDir, "--agent", agentBin)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !regexp.MustCompile(`warning: built without --central-key: .* refuse every deploy`).MatchString(errs) {
		t.Errorf("a build without a central key does not warn:\n%s", errs)
	}
	if code, _, errs := run("bootenv", "build", "--out", out, "--kernel", kernel, "--modules-dir", modDir, "--agent", agentBin, "--central-key", "tms-ed25519:AAAA"); code != 2 || !regexp.MustCompile(`--central-key: .*bytes`).MatchString(errs) {
		t.Errorf("a malformed central key: exit %d, %s", code, errs)
	}
	k, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	code, keyed, errs := run("bootenv", "build", "--out", out, "--kernel", kernel, "--modules-dir", modDir, "--agent", agentBin, "--central-key", k.Public().String())
	if code != 0 || regexp.MustCompile(`warning`).MatchString(errs) || !regexp.MustCompile(`central key `+k.Public().ID()).MatchString(keyed) {
		t.Errorf("with a central key: exit %d\n%s\n%s", code, keyed, errs)
	}
	for _, re := range []string{
		regexp.QuoteMeta(filepath.Join(out, "vmlinuz")) + `\s+6 B\s+kernel 6\.1\.0-9-amd64`,
		regexp.QuoteMeta(filepath.Join(out, "initrd")) + `\s+[0-9.]+ [KM]i?B\s+agent [0-9.]+ [KM]i?B, 1 modules`,
		`this kernel has no module virtio_pci`,
	} {
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("output does not match %s:\n%s", re, stdout)
		}
	}
	for _, f := range []string{"vmlinuz", "initrd"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}
