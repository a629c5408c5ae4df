package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tms/internal/sampledisk"
)

// TestCtrlCDuringImport runs the real binary, interrupts an import the way Ctrl-C does, and
// checks that nothing was published, the store is intact, and the next run continues.
func TestCtrlCDuringImport(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tms")
	if out, err := exec.Command("go", "build", "-o", bin, "tms/cmd/tms").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := sampledisk.Write(disk, sampledisk.Options{Size: 768 << 20, Seed: 5, Random: 1}); err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(dir, "store")
	cmd := exec.Command(bin, "image", "import", "--store", st, "--jobs", "1", "lab", disk)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the import has staged some chunks: 20 chunks' worth under tmp/ (chunk
	// files, or the pack being written).
	deadline := time.Now().Add(30 * time.Second)
	staged := func() int64 {
		var n int64
		ents, _ := os.ReadDir(filepath.Join(st, "tmp"))
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	for {
		if staged() > 20*256<<10 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("import staged nothing in 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("interrupted import: %v, stderr %q; want exit 130", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") || !strings.Contains(stderr.String(), "run the same command again") {
		t.Errorf("stderr %q", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(st, "refs")); err == nil {
		t.Fatal("an interrupted import published a tag")
	}
	if ents, _ := os.ReadDir(filepath.Join(st, "tmp")); len(ents) != 0 {
		t.Errorf("interrupted import left %d temporary files", len(ents))
	}

	run := newRunner(nil)
	must(t, run, "store", "verify", "--store", st)
	out := must(t, run, "image", "import", "--store", st, "lab", disk)
	if strings.Contains(out, "added 768.0 MiB") {
		t.Errorf("the second run stored everything again: %s", out)
	}
	must(t, run, "store", "verify", "--store", st)
}
