package tftpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tests with the clients people actually use: curl (as iPXE-like tooling would) and tftp-hpa.
// CI installs the Debian packages curl and tftp-hpa; without them these tests skip.

func needTool(t *testing.T, tool, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not found (install the Debian package %s): %v", tool, pkg, err)
	}
	return path
}

// run runs a client in dir with a deadline and returns its combined output and exit error.
func run(t *testing.T, dir, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	t.Logf("%s %q: %v\n%s", filepath.Base(name), args, err, out)
	return string(out), err
}

// nothingWritten fails unless path is absent or empty.
func nothingWritten(t *testing.T, path string) {
	t.Helper()
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		b, _ := os.ReadFile(path)
		t.Errorf("%s: %d bytes written: %.80q", path, st.Size(), b)
	}
}

func TestCurl(t *testing.T) {
	curl := needTool(t, "curl", "curl")
	dir, files := testDir(t)
	addr := start(t, &Server{Dir: dir})
	work := t.TempDir()
	url := func(name string) string { return fmt.Sprintf("tftp://%s/%s", addr, name) }

	for _, tt := range []struct {
		name string
		args []string
	}{
		{"undionly.kpxe", nil},
		{"ipxe.efi", []string{"--tftp-blksize", "1468"}},
		{"snponly.efi", []string{"--tftp-blksize", "8192"}},
	} {
		out := filepath.Join(work, tt.name)
		if _, err := run(t, work, curl, append(tt.args, "-sS", url(tt.name), "-o", out)...); err != nil {
			t.Errorf("curl %s: %v", tt.name, err)
			continue
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, files[tt.name]) {
			t.Errorf("curl %s: got %d bytes, want the file's %d", tt.name, len(got), len(files[tt.name]))
		}
	}

	out := filepath.Join(work, "refused")
	// Exit status 68 is CURLE_TFTP_NOTFOUND. curl 7.88 (Debian 12) prints a stale getpeername()
	// error instead of the server's message (curl/curl#11332), so only the status is checked.
	_, err := run(t, work, curl, "-sS", url("secret.txt"), "-o", out)
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 68 {
		t.Errorf("curl secret.txt: %v; want exit status 68 (TFTP file not found)", err)
	}
	nothingWritten(t, out)
}

func TestTFTPHPA(t *testing.T) {
	tftp := needTool(t, "tftp", "tftp-hpa")
	if out, _ := exec.Command(tftp, "-V").CombinedOutput(); !bytes.Contains(out, []byte("tftp-hpa")) {
		t.Skipf("%s is not tftp-hpa (install the Debian package tftp-hpa): %q", tftp, out)
	}
	dir, files := testDir(t)
	before := listDir(t, dir)
	addr := start(t, &Server{Dir: dir})
	work := t.TempDir()
	// Always name the local file: tftp-hpa would otherwise write to the remote name, and
	// "/etc/passwd" is a remote name this test requests.
	client := func(cmd ...string) (string, error) {
		args := []string{"-m", "binary", addr.Addr().String(), strconv.Itoa(int(addr.Port())), "-c"}
		return run(t, work, tftp, append(args, cmd...)...)
	}

	local := filepath.Join(work, "undionly.kpxe")
	client("get", "undionly.kpxe", local)
	if got, _ := os.ReadFile(local); !bytes.Equal(got, files["undionly.kpxe"]) {
		t.Errorf("get undionly.kpxe: got %d bytes, want the file's %d", len(got), len(files["undionly.kpxe"]))
	}
	local = filepath.Join(work, "ipxe.efi")
	run(t, work, tftp, "-m", "binary", addr.Addr().String(), strconv.Itoa(int(addr.Port())), "-c", "get", "/ipxe.efi", local)
	if got, _ := os.ReadFile(local); !bytes.Equal(got, files["ipxe.efi"]) {
		t.Errorf("get /ipxe.efi: got %d bytes, want the file's %d", len(got), len(files["ipxe.efi"]))
	}

	for i, tt := range []struct{ remote, want string }{
		{"../../etc/passwd", `invalid file name: name contains ".."`},
		{"/etc/passwd", "file not found"},
		{"secret.txt", "file not found"},
		{"pxelinux.0", "file not found"},
		{strings.Repeat("a", 300), "more than 255"},
	} {
		local := filepath.Join(work, "refused"+strconv.Itoa(i))
		out, _ := client("get", tt.remote, local)
		if !strings.Contains(out, tt.want) {
			t.Errorf("get %.40q: output %q, want %q", tt.remote, out, tt.want)
		}
		nothingWritten(t, local)
	}

	upload := filepath.Join(work, "upload.bin")
	if err := os.WriteFile(upload, []byte("from a PC"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, remote := range []string{"upload.bin", "undionly.kpxe"} {
		out, _ := client("put", upload, remote)
		if !strings.Contains(out, "access violation: tms serves files read-only") {
			t.Errorf("put %s: output %q, want the read-only refusal", remote, out)
		}
	}
	if after := listDir(t, dir); !slices.Equal(before, after) {
		t.Errorf("Dir changed: %q, then %q", before, after)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "undionly.kpxe")); !bytes.Equal(got, files["undionly.kpxe"]) {
		t.Error("put changed undionly.kpxe")
	}
}
