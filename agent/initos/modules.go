package initos

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ReadModuleList reads the initrd's module manifest (/etc/tms-modules): one module file a
// line, in load order; blank lines and lines starting with # are skipped.
func ReadModuleList(r io.Reader) ([]string, error) {
	var out []string
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		out = append(out, line)
	}
	return out, s.Err()
}

// loadModules loads the module files in order with finit_module. A module that fails is
// logged and skipped: a terminal whose NIC driver loads can still work when another driver
// does not. It returns how many were loaded.
func loadModules(log *slog.Logger, files []string) int {
	n := 0
	for _, f := range files {
		err := loadModule(f)
		switch {
		case err == nil:
			n++
		case errors.Is(err, unix.EEXIST):
			n++ // already loaded (built in, or pulled in by another)
		default:
			log.Warn("module not loaded", "module", f, "err", err)
		}
	}
	return n
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		return fmt.Errorf("finit_module: %w", err)
	}
	return nil
}
