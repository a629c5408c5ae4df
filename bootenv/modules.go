package bootenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules are the drivers the in-memory OS loads: the NICs and disk controllers of
// classroom PCs and of virtual machines, and what they need to show up as a network interface
// or a block device. Modules the kernel has built in are skipped.
var DefaultModules = []string{
	// virtual machines
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi",
	// NICs
	"e1000", "e1000e", "igb", "igc", "r8169", "tg3", "bnx2",
	// disks: SATA (AHCI), NVMe, and sd_mod, through which SATA and SCSI disks become /dev/sdX
	"ahci", "nvme", "sd_mod",
	// raw packet sockets, which the DHCP client uses
	"af_packet",
}

// moduleIndex is what a kernel's module directory says about its modules: each loadable
// module's file (relative to the directory) and dependencies, the built-in ones, and the soft
// dependencies a driver asks to have loaded before it (r8169 its PHY driver, for one).
type moduleIndex struct {
	file    map[string]string   // module name → path relative to the modules directory
	deps    map[string][]string // module name → names of the modules it needs
	builtin map[string]bool
	softPre map[string][]string
}

// modName is the name of a module from its file: kernel/drivers/net/virtio_net.ko.xz →
// virtio_net. Dashes and underscores are the same in module names.
func modName(file string) string {
	b := path.Base(file)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// parseModulesDep reads modules.dep ("kernel/a.ko.xz: kernel/b.ko.xz kernel/c.ko.xz"),
// modules.builtin (one path per line) and modules.softdep ("softdep r8169 pre: realtek").
func parseModuleIndex(dep, builtin, softdep io.Reader) (*moduleIndex, error) {
	ix := &moduleIndex{file: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}, softPre: map[string][]string{}}
	s := bufio.NewScanner(dep)
	s.Buffer(nil, 1<<20)
	for ln := 1; s.Scan(); ln++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: no colon in %q", ln, line)
		}
		name := modName(file)
		ix.file[name] = file
		for _, d := range strings.Fields(rest) {
			ix.deps[name] = append(ix.deps[name], modName(d))
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	if builtin != nil {
		s := bufio.NewScanner(builtin)
		for s.Scan() {
			if line := strings.TrimSpace(s.Text()); line != "" {
				ix.builtin[modName(line)] = true
			}
		}
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("modules.builtin: %w", err)
		}
	}
	if softdep != nil {
		s := bufio.NewScanner(softdep)
		for s.Scan() {
			f := strings.Fields(s.Text())
			if len(f) < 3 || f[0] != "softdep" {
				continue
			}
			name, pre := strings.ReplaceAll(f[1], "-", "_"), false
			for _, w := range f[2:] {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						ix.softPre[name] = append(ix.softPre[name], strings.ReplaceAll(w, "-", "_"))
					}
				}
			}
		}
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("modules.softdep: %w", err)
		}
	}
	return ix, nil
}

// loadOrder returns the module files to load for the wanted modules, each after the modules
// it needs (its soft "pre" dependencies too, when the kernel has them), each once. Built-in
// modules need no file. missing lists the wanted names this kernel has neither as a module nor
// built in; a soft dependency the kernel lacks is left out quietly.
func (ix *moduleIndex) loadOrder(want []string) (files, missing []string, err error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(name string, chain []string, soft bool) error
	visit = func(name string, chain []string, soft bool) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("modules.dep has a dependency cycle: %s", strings.Join(append(chain, name), " → "))
		}
		if ix.builtin[name] {
			state[name] = done
			return nil
		}
		file, ok := ix.file[name]
		if !ok {
			if !soft {
				if len(chain) > 0 {
					return fmt.Errorf("module %s needs %s, which modules.dep does not list", chain[len(chain)-1], name)
				}
				missing = append(missing, name)
			}
			state[name] = done
			return nil
		}
		state[name] = visiting
		chain = append(chain, name)
		for _, d := range ix.softPre[name] {
			if err := visit(d, chain, true); err != nil {
				return err
			}
		}
		for _, d := range ix.deps[name] {
			if err := visit(d, chain, false); err != nil {
				return err
			}
		}
		state[name] = done
		files = append(files, file)
		return nil
	}
	for _, w := range want {
		if err := visit(strings.ReplaceAll(w, "-", "_"), nil, false); err != nil {
			return nil, nil, err
		}
	}
	return files, missing, nil
}

// readModule reads a module file and undoes its compression (xz, zstd or gzip, as Debian and
// others ship them), so the in-memory OS can load it with finit_module on any kernel. It
// returns the data and the path the module gets in the initrd (without the compression
// suffix).
func readModule(dir, rel string) (data []byte, name string, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, "", err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(rel, ".ko"):
		return raw, rel, nil
	case strings.HasSuffix(rel, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", rel, err)
		}
		r = xr
	case strings.HasSuffix(rel, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", rel, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(rel, ".ko.gz"):
		gr, err := newGzipReader(raw)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", rel, err)
		}
		r = gr
	default:
		return nil, "", fmt.Errorf("%s: not a kernel module file", rel)
	}
	data, err = io.ReadAll(r)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", rel, err)
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return nil, "", fmt.Errorf("%s: not an ELF object once decompressed", rel)
	}
	return data, rel[:strings.Index(rel, ".ko")+3], nil
}
