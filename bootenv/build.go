// Package bootenv builds the in-memory OS that terminals network boot into: Debian's kernel
// and an initrd whose /init is the static tms agent, with the kernel modules that common NICs
// and disk controllers need (decompressed, so the agent loads them with finit_module whatever
// compression the kernel supports) and the manifest /etc/tms-modules that lists them in load
// order, central's public key (/etc/tms/central.pub: the agent deploys only versions central
// signed) and the CA certificates the agent trusts for HTTPS to its region (/etc/tms/ca.pem).
// The output is reproducible: the same kernel, modules, agent, key and CA give the same bytes.
//
//	res, err := bootenv.Build(ctx, bootenv.Options{Out: "/srv/tms/boot"})
//	// res.Kernel is /srv/tms/boot/vmlinuz, res.Initrd /srv/tms/boot/initrd
//
// Package initos (tms/agent/initos) is what the agent does as /init.
package bootenv

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"debug/elf"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"tms/internal/atomicfile"
	"tms/signing"
)

// ModulesManifest is where the initrd lists the module files to load, in order, one absolute
// path a line.
const ModulesManifest = "/etc/tms-modules"

// Where the initrd holds what the agent trusts (package initos reads them).
const (
	// CentralKeyPath holds central's public key in its text form, tms-ed25519:….
	CentralKeyPath = "/etc/tms/central.pub"
	// CAPath holds the PEM certificates the agent trusts for HTTPS to its region.
	CAPath = "/etc/tms/ca.pem"
)

// Options say what to build from.
type Options struct {
	// Out is the directory that gets vmlinuz and initrd.
	Out string
	// Kernel is the kernel image (default: the newest /boot/vmlinuz-*).
	Kernel string
	// ModulesDir is the kernel's module directory (default: /lib/modules/VERSION, VERSION
	// taken from the kernel's file name vmlinuz-VERSION).
	ModulesDir string
	// Agent is a static tms-agent binary (default: build ./cmd/tms-agent with CGO_ENABLED=0,
	// which needs the tms source tree as working directory).
	Agent string
	// AgentVersion is stamped into an agent built here (agent.Version), which it reports at
	// boot; empty leaves the agent's default.
	AgentVersion string
	// Modules are the modules to load (default DefaultModules), with their dependencies.
	Modules []string
	// CentralKey is central's public key: the agent checks every version it deploys with it.
	// Without it the boot environment still builds, but its agent refuses every deploy.
	CentralKey signing.PublicKey
	// CAFile is a PEM file of CA certificates the agent trusts for HTTPS to its region; empty
	// means none (the region is reached over plain HTTP, or not at all over HTTPS).
	CAFile string
	Log    *slog.Logger
}

// Result says what Build wrote.
type Result struct {
	Kernel, Initrd         string // paths
	KernelSize, InitrdSize int64
	AgentSize              int64
	KernelVersion          string
	Modules                []string // module files in the initrd, in load order
	Missing                []string // wanted modules this kernel has neither as module nor built in
	// CentralKeyID is the key id of the central key in the initrd; empty if there is none.
	CentralKeyID string
	// CACerts counts the CA certificates in the initrd.
	CACerts int
}

// maxCAFile bounds the CA file Build reads.
const maxCAFile = 1 << 20

// Build writes Out/vmlinuz and Out/initrd.
func Build(ctx context.Context, o Options) (*Result, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Out == "" {
		return nil, errors.New("bootenv: no output directory")
	}
	kernel := o.Kernel
	if kernel == "" {
		k, err := NewestKernel("/boot")
		if err != nil {
			return nil, err
		}
		kernel = k
	}
	version := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	modDir := o.ModulesDir
	if modDir == "" {
		if version == filepath.Base(kernel) {
			return nil, fmt.Errorf("bootenv: cannot tell the version of kernel %s from its name; give its modules directory", kernel)
		}
		modDir = filepath.Join("/lib/modules", version)
	}
	version = filepath.Base(modDir)
	want := o.Modules
	if want == nil {
		want = DefaultModules
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}

	agentBin := o.Agent
	if agentBin == "" {
		tmp, err := os.MkdirTemp("", "tms-bootenv-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		agentBin = filepath.Join(tmp, "tms-agent")
		log.Info("building the agent", "out", agentBin)
		if err := BuildAgent(ctx, agentBin, o.AgentVersion); err != nil {
			return nil, err
		}
	}
	agentData, err := os.ReadFile(agentBin)
	if err != nil {
		return nil, err
	}
	if err := checkStatic(agentBin); err != nil {
		return nil, err
	}

	var caPEM []byte
	var caCerts int
	if o.CAFile != "" {
		if caPEM, caCerts, err = readCA(o.CAFile); err != nil {
			return nil, err
		}
	}

	ar := newArchive()
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/etc", "/etc/tms", "/mnt"} {
		if err := ar.dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The kernel opens /dev/console for init's stdin, stdout and stderr before devtmpfs is
	// mounted: without this node the agent would start with no console.
	if err := ar.charDev("/dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := ar.file("/init", 0o755, agentData); err != nil {
		return nil, err
	}

	res := &Result{KernelVersion: version, AgentSize: int64(len(agentData)), CACerts: caCerts}
	if !o.CentralKey.IsZero() {
		if err := ar.file(CentralKeyPath, 0o644, []byte(o.CentralKey.String()+"\n")); err != nil {
			return nil, err
		}
		res.CentralKeyID = o.CentralKey.ID()
	} else {
		log.Warn("no central public key: the agent of this boot environment will refuse every deploy (give --central-key)")
	}
	if caPEM != nil {
		if err := ar.file(CAPath, 0o644, caPEM); err != nil {
			return nil, err
		}
	}
	ix, err := readModuleIndex(modDir)
	if err != nil {
		return nil, err
	}
	files, missing, err := ix.loadOrder(want)
	if err != nil {
		return nil, err
	}
	res.Missing = missing
	for _, m := range missing {
		log.Warn("this kernel has no such module", "module", m, "kernel", version)
	}
	var manifest strings.Builder
	for _, f := range files {
		data, name, err := readModule(modDir, f)
		if err != nil {
			return nil, err
		}
		p := "/lib/modules/" + version + "/" + name
		if err := ar.file(p, 0o644, data); err != nil {
			return nil, err
		}
		manifest.WriteString(p + "\n")
		res.Modules = append(res.Modules, p)
	}
	if err := ar.file(ModulesManifest, 0o644, []byte(manifest.String())); err != nil {
		return nil, err
	}

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := ar.WriteTo(zw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	res.Initrd = filepath.Join(o.Out, "initrd")
	if err := atomicfile.Write(res.Initrd, bytes.NewReader(buf.Bytes()), 0o644); err != nil {
		return nil, err
	}
	res.InitrdSize = int64(buf.Len())

	kf, err := os.Open(kernel)
	if err != nil {
		return nil, err
	}
	defer kf.Close()
	res.Kernel = filepath.Join(o.Out, "vmlinuz")
	if err := atomicfile.Write(res.Kernel, kf, 0o644); err != nil {
		return nil, err
	}
	st, err := os.Stat(res.Kernel)
	if err != nil {
		return nil, err
	}
	res.KernelSize = st.Size()
	return res, nil
}

// readCA reads a PEM file of CA certificates and counts them; anything in it but
// certificates, or no certificate at all, is an error.
func readCA(path string) ([]byte, int, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("bootenv: CA file: %w", err)
	}
	if st.Size() > maxCAFile {
		return nil, 0, fmt.Errorf("bootenv: CA file %s is larger than %d bytes", path, maxCAFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("bootenv: CA file: %w", err)
	}
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, 0, fmt.Errorf("bootenv: CA file %s holds a %q block; want certificates only", path, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, 0, fmt.Errorf("bootenv: CA file %s: certificate %d: %w", path, n+1, err)
		}
		n++
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("bootenv: CA file %s holds no PEM certificate", path)
	}
	return b, n, nil
}

func readModuleIndex(dir string) (*moduleIndex, error) {
	dep, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("bootenv: kernel modules: %w", err)
	}
	defer dep.Close()
	var builtin, softdep io.Reader
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		defer f.Close()
		builtin = f
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if f, err := os.Open(filepath.Join(dir, "modules.softdep")); err == nil {
		defer f.Close()
		softdep = f
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return parseModuleIndex(dep, builtin, softdep)
}

// NewestKernel returns the kernel in dir (vmlinuz-VERSION) with the highest version.
func NewestKernel(dir string) (string, error) {
	m, err := filepath.Glob(filepath.Join(dir, "vmlinuz-*"))
	if err != nil {
		return "", err
	}
	if len(m) == 0 {
		return "", fmt.Errorf("bootenv: no kernel %s/vmlinuz-* (Debian's package linux-image-amd64 installs one)", dir)
	}
	slices.SortFunc(m, func(a, b string) int { return compareVersions(filepath.Base(a), filepath.Base(b)) })
	return m[len(m)-1], nil
}

// compareVersions orders "vmlinuz-6.12.9-amd64" before "vmlinuz-6.12.10-amd64": runs of
// digits compare as numbers, everything else byte by byte.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, _ := strconv.ParseUint(a[:da], 10, 64)
			nb, _ := strconv.ParseUint(b[:db], 10, 64)
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			if a[0] < b[0] {
				return -1
			}
			return 1
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// BuildAgent builds the static agent (CGO_ENABLED=0 go build ./cmd/tms-agent) into out, with
// version (if not empty) as its agent.Version. The working directory must be inside the tms
// source tree.
func BuildAgent(ctx context.Context, out, version string) error {
	ldflags := "-s -w"
	if version != "" {
		if strings.ContainsAny(version, " \t'\"") {
			return fmt.Errorf("bootenv: agent version %q has spaces or quotes", version)
		}
		ldflags += " -X tms/agent.Version=" + version
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags="+ldflags, "-o", out, "tms/cmd/tms-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bootenv: building the agent (run this in the tms source tree, or pass a built agent): %w\n%s", err, stderr.Bytes())
	}
	return nil
}

// checkStatic refuses an agent that needs a dynamic loader: the initrd has none.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("bootenv: agent %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("bootenv: agent %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("bootenv: agent %s is built for %v, not x86-64", path, f.Machine)
	}
	return nil
}

func newGzipReader(b []byte) (io.Reader, error) { return gzip.NewReader(bytes.NewReader(b)) }
