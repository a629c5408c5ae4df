// Package initos is what the tms agent does as /init (PID 1) of the network-booted in-memory
// OS: it mounts /proc, /sys, /dev and /run, loads the NIC and disk drivers the initrd lists
// in /etc/tms-modules, reads the kernel command line (tms.region=URL, tms.token=…,
// tms.disk=/dev/…), reads central's public key (/etc/tms/central.pub: the agent deploys only
// versions central signed) and the CA it trusts for HTTPS to its region (/etc/tms/ca.pem), both
// put there by tms bootenv build, brings up the first NIC with a link and configures it by
// DHCP, picks the disk with care (never a removable, USB, mounted or busy one), runs the agent
// for one boot's work and reboots. A setup failure is printed on the console and the terminal reboots after
// 30 seconds.
//
//	if os.Getpid() == 1 {
//		initos.Main() // never returns
//	}
//
// Package bootenv builds the initrd this runs in.
package initos

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"tms/agent"
	"tms/signing"
)

// Where the in-memory OS finds things.
const (
	ModulesManifest = "/etc/tms-modules"
	// CentralKeyPath holds central's public key in its text form (tms bootenv build
	// --central-key); CAPath the PEM certificates trusted for HTTPS to the region (--ca).
	CentralKeyPath = "/etc/tms/central.pub"
	CAPath         = "/etc/tms/ca.pem"
	cmdlinePath    = "/proc/cmdline"
	sysBlock       = "/sys/block"
	mountsPath     = "/proc/mounts"
)

// Main runs the in-memory OS and reboots; it never returns.
func Main() {
	start := time.Now()
	mountErr := mountAll()
	attachConsole()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("from", "tms-init")
	log.Info("tms in-memory OS starting", "agent_version", agent.Version)
	ctx := context.Background()
	a, err := setup(ctx, log, mountErr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\n*** tms: the terminal cannot work on its disk: %v\n*** rebooting in 30 seconds\n\n", err)
		time.Sleep(30 * time.Second)
		reboot(log)
	}
	log.Info("agent starting", "region", a.Region.String(), "mac", a.MAC, "disk", a.Disk, "since_init", time.Since(start).Round(time.Millisecond))
	if err := a.Run(ctx); err != nil {
		log.Error("agent failed", "err", err)
	} else {
		log.Info("agent done")
	}
	reboot(log)
}

// setup makes the system ready and returns the agent to run.
func setup(ctx context.Context, log *slog.Logger, mountErr error) (*agent.Agent, error) {
	if mountErr != nil {
		return nil, mountErr
	}
	cl, err := os.ReadFile(cmdlinePath)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseCmdline(string(cl))
	if err != nil {
		return nil, err
	}
	key, roots, err := LoadTrust(CentralKeyPath, CAPath)
	if err != nil {
		return nil, err
	}
	if key.IsZero() {
		log.Warn("this boot environment has no central public key: the agent will refuse every deploy (rebuild it with tms bootenv build --central-key)")
	} else {
		log.Info("central's key", "key_id", key.ID())
	}
	seeded := seedRandom()
	if f, err := os.Open(ModulesManifest); err == nil {
		mods, err := ReadModuleList(f)
		f.Close()
		if err != nil {
			log.Warn("module list unreadable", "err", err)
		}
		t := time.Now()
		n := loadModules(log, mods)
		log.Info("drivers loaded", "loaded", n, "listed", len(mods), "took", time.Since(t).Round(time.Millisecond))
	} else {
		log.Warn("no module list; using the kernel's built-in drivers only", "err", err)
	}
	n, err := upLink(ctx, log, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if d := <-seeded; d > time.Second {
		log.Info("the kernel's random numbers took a while to be ready", "waited", d.Round(time.Millisecond))
	}
	if _, err := configure(ctx, log, n); err != nil {
		return nil, err
	}
	disk, err := waitDisk(ctx, log, cfg.Disk, 10*time.Second)
	if errors.Is(err, ErrNoDisk) {
		log.Warn("no disk: the region will see a terminal without one", "err", err)
	} else if err != nil {
		return nil, err
	}
	return &agent.Agent{Region: cfg.Region, MAC: n.MAC.String(), Disk: disk, BootToken: cfg.Token, BootEnv: cfg.BootEnv, Once: true,
		CentralKey: key, RootCAs: roots, Log: log.With("from", "tms-agent"), HTTP: &http.Client{Timeout: 2 * time.Minute}}, nil
}

// maxCAFile bounds the CA file read at boot.
const maxCAFile = 1 << 20

// LoadTrust reads what the agent trusts: central's public key from keyPath and the CA
// certificates for HTTPS to the region from caPath. A file that is not there gives a zero key
// (the agent then refuses deploys) or nil roots (the system's, of which the in-memory OS has
// none); a file that is there but unreadable or malformed is an error: the boot environment is
// broken and must be rebuilt.
func LoadTrust(keyPath, caPath string) (signing.PublicKey, *x509.CertPool, error) {
	var key signing.PublicKey
	if _, err := os.Stat(keyPath); err == nil {
		if key, err = signing.LoadPublicKey(keyPath); err != nil {
			return key, nil, fmt.Errorf("the boot environment's central key: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return key, nil, err
	}
	st, err := os.Stat(caPath)
	if errors.Is(err, os.ErrNotExist) {
		return key, nil, nil
	}
	if err != nil {
		return key, nil, err
	}
	if st.Size() > maxCAFile {
		return key, nil, fmt.Errorf("the boot environment's CA file %s is larger than %d bytes", caPath, maxCAFile)
	}
	pem, err := os.ReadFile(caPath)
	if err != nil {
		return key, nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return key, nil, fmt.Errorf("the boot environment's CA file %s holds no PEM certificate", caPath)
	}
	return key, roots, nil
}

// seedRandom waits until the kernel's random number generator is ready, and says on the
// channel how long that took. The DHCP client polls for random transaction ids without ever
// blocking, and a kernel without a hardware source (a VM without RDRAND) then stays unseeded
// for minutes; one blocking getrandom makes the kernel seed itself from CPU timing jitter at
// once.
func seedRandom() <-chan time.Duration {
	ch := make(chan time.Duration, 1)
	go func() {
		t := time.Now()
		b := make([]byte, 16)
		for {
			if _, err := unix.Getrandom(b, 0); err != unix.EINTR {
				break
			}
		}
		ch <- time.Since(t)
	}()
	return ch
}

// waitDisk picks the disk, giving controllers that probe in the background (AHCI, NVMe) up to
// timeout to show their disks.
func waitDisk(ctx context.Context, log *slog.Logger, want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		d, err := PickDisk(sysBlock, mountsPath, want)
		if err == nil {
			return d, nil
		}
		notYet := errors.Is(err, ErrNoDisk) || errors.Is(err, ErrNoSuchDisk)
		if !notYet || time.Now().After(deadline) {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// mountAll mounts the kernel's file systems.
func mountAll() error {
	for _, m := range []struct {
		fstype, target string
		flags          uintptr
		data           string
	}{
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// attachConsole makes stdout and stderr the console, in case the kernel could not open one for
// init (an initrd without /dev/console).
func attachConsole() {
	f, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return
	}
	for _, fd := range []int{0, 1, 2} {
		unix.Dup3(int(f.Fd()), fd, 0)
	}
	f.Close()
}

// reboot syncs the disks and restarts the terminal.
func reboot(log *slog.Logger) {
	log.Info("rebooting")
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	log.Error("reboot failed; halting here", "err", err)
	for {
		time.Sleep(time.Hour)
	}
}
