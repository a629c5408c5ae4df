package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"tms/agentwire"
	"tms/manifest"
)

// Power switches the terminal off or reboots it. SystemPower is the real one; tms dev's
// simulated terminals have their own.
type Power interface {
	Poweroff(ctx context.Context) error
	Reboot(ctx context.Context) error
}

// Service is the agent in the terminal's installed OS (tms-agent service): it polls its region
// for commands, signed with the terminal's agent key, and obeys poweroff and reboot. Its polls
// are how the region knows the terminal is up (the region records the terminal as seen and
// `tms power on` counts a poll as the terminal having come). It runs no task on the live disk:
// a capture or deploy needs the network boot, and the region asks for that with a reboot.
type Service struct {
	Region *url.URL // the region's HTTP service
	MAC    string
	Key    []byte // the terminal's agent key
	// Disk is the terminal's disk, checked against the version the region recorded for it
	// when the service starts; empty: no check.
	Disk  string
	Power Power
	HTTP  *http.Client
	Log   *slog.Logger
	// Wait is how long a poll is held open (default 30 s; the region caps it at a minute).
	Wait time.Duration
	// Backoff is the first pause after a failed poll, doubled up to a minute (default 1 s).
	Backoff time.Duration
}

// Run polls for commands until ctx ends or a power command was carried out (then it returns
// nil: the system is going down). A refused key is returned at once: polling again with it
// cannot help.
func (s *Service) Run(ctx context.Context) error {
	if s.Region == nil || s.MAC == "" || len(s.Key) == 0 || s.Power == nil {
		return errors.New("the agent service needs its region's URL, the terminal's MAC, its agent key and a power switch")
	}
	c := &Client{Region: s.Region, HTTP: s.HTTP, MAC: s.MAC, Key: s.Key, Log: s.Log}
	wait := s.Wait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := s.hello(ctx, c, log); err != nil {
		return err
	}
	failures := 0
	for ctx.Err() == nil {
		cmd, err := c.Command(ctx, wait.String())
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if Permanent(err) {
				return fmt.Errorf("the region refuses this terminal's key: %w", err)
			}
			log.Warn("region not reached", "region", s.Region.String(), "err", err)
			d := s.Backoff
			if d <= 0 {
				d = time.Second
			}
			d = min(d<<min(failures, 6), time.Minute)
			d += time.Duration(rand.Int64N(int64(d)/4 + 1))
			failures++
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
			continue
		}
		failures = 0
		switch cmd {
		case agentwire.CommandPoweroff:
			log.Info("powering off on the region's command")
			return s.Power.Poweroff(ctx)
		case agentwire.CommandReboot:
			log.Info("rebooting on the region's command")
			return s.Power.Reboot(ctx)
		}
	}
	return nil
}

// hello tells the region the terminal is up and checks the disk against the version the region
// recorded for it (agentwire.HelloReply). Only a refused key is an error: the region being out
// of reach, or a check that cannot be made, must not keep the service from taking commands.
func (s *Service) hello(ctx context.Context, c *Client, log *slog.Logger) error {
	size, err := DiskSize(s.Disk)
	if err != nil {
		log.Warn("cannot read the disk's size", "disk", s.Disk, "err", err)
	}
	rep, err := c.Hello(ctx, agentwire.HelloRequest{MAC: s.MAC, AgentVersion: Version, DiskSize: size})
	if err != nil {
		if isAuth(err) {
			return fmt.Errorf("the region refuses this terminal's key: %w", err)
		}
		log.Warn("hello not answered; the disk is not checked", "region", s.Region.String(), "err", err)
		return nil
	}
	c.SetServers(rep.Servers)
	if rep.Version == "" || s.Disk == "" {
		return nil
	}
	check := CheckSamples(s.Disk, rep)
	if len(check.Mismatch) > 0 || check.Error != "" {
		log.Warn("the disk no longer holds the version recorded at its last deploy", "version", rep.Version, "mismatch", check.Mismatch, "err", check.Error)
	}
	if err := c.CheckDisk(ctx, check); err != nil {
		log.Warn("disk check not reported", "err", err)
	}
	return nil
}

// isAuth reports whether err is the region refusing the request's key signature.
func isAuth(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden)
}

// CheckSamples hashes the hello reply's sample ranges of disk and names those that differ.
func CheckSamples(disk string, rep agentwire.HelloReply) agentwire.DiskCheck {
	check := agentwire.DiskCheck{Version: rep.Version}
	f, err := os.Open(disk)
	if err != nil {
		check.Error = err.Error()
		return check
	}
	defer f.Close()
	for _, sm := range rep.Samples {
		buf := make([]byte, sm.Length)
		if _, err := f.ReadAt(buf, sm.Offset); err != nil {
			check.Error = fmt.Sprintf("reading chunk %d: %v", sm.Index, err)
			return check
		}
		got := manifest.ID{}
		if !allZero(buf) {
			got = rep.Hash.Sum(buf)
		}
		if got != sm.Chunk {
			check.Mismatch = append(check.Mismatch, sm.Index)
		}
	}
	return check
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// SystemPower powers the installed OS off or reboots it: `systemctl poweroff|reboot`, which
// stops services and unmounts file systems in order; if systemctl is missing or fails, sync
// and reboot(2) at once.
type SystemPower struct{ Log *slog.Logger }

// Poweroff powers the system off.
func (p SystemPower) Poweroff(ctx context.Context) error {
	return p.do(ctx, "poweroff", unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// Reboot reboots the system.
func (p SystemPower) Reboot(ctx context.Context) error {
	return p.do(ctx, "reboot", unix.LINUX_REBOOT_CMD_RESTART)
}

func (p SystemPower) do(ctx context.Context, verb string, cmd int) error {
	out, err := exec.CommandContext(ctx, "systemctl", verb).CombinedOutput()
	if err == nil {
		return nil
	}
	if p.Log != nil {
		p.Log.Warn("systemctl failed; rebooting directly", "verb", verb, "err", err, "output", strings.TrimSpace(string(out)))
	}
	unix.Sync()
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("%s: systemctl failed and reboot(2) too: %w", verb, err)
	}
	return nil
}

// MaxKeyFile bounds the key file ReadKeyFile reads.
const MaxKeyFile = 1024

// ReadKeyFile reads a terminal's agent key: one line of base64 (standard or URL alphabet,
// padded or not), as FormatKey writes it. The file must not be readable by group or
// others: the key lets whoever holds it speak for the terminal.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("agent key file %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	if fi.Size() > MaxKeyFile {
		return nil, fmt.Errorf("agent key file %s holds %d bytes; a key is one line of base64", path, fi.Size())
	}
	b := make([]byte, MaxKeyFile+1)
	n, _ := f.Read(b)
	return ParseKey(string(b[:n]))
}

// ParseKey decodes an agent key written as base64 (standard or URL alphabet, padded or not).
func ParseKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	text = strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(text), "=")
	key, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("agent key is not base64: %w", err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("agent key is %d bytes; a key has at least 16", len(key))
	}
	return key, nil
}

// FormatKey writes an agent key as ReadKeyFile reads it.
func FormatKey(key []byte) string { return base64.RawURLEncoding.EncodeToString(key) + "\n" }

// Enroll trades an enrollment token (tms terminal enroll-token) for the terminal's agent key
// and writes it to keyFile (mode 600, atomically). The region refuses it over plain HTTP from
// anywhere but loopback, for a terminal not enrolled, one that has a key already (unless the
// token re-keys) and after the token's TTL.
func Enroll(ctx context.Context, c *Client, token, keyFile string) ([]byte, error) {
	var rep agentwire.EnrollReply
	if err := c.postJSON(ctx, "/v1/agent/enroll", agentwire.EnrollRequest{MAC: c.MAC, Token: token}, &rep); err != nil {
		return nil, fmt.Errorf("enrolling with the region: %w", err)
	}
	if len(rep.Key) < 16 {
		return nil, fmt.Errorf("the region's enrollment answer holds a key of %d bytes", len(rep.Key))
	}
	if err := writeKeyFile(keyFile, rep.Key); err != nil {
		return nil, err
	}
	return rep.Key, nil
}

// writeKeyFile writes key as FormatKey does, mode 600: a temporary file, fsynced, renamed.
func writeKeyFile(path string, key []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(FormatKey(key)); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// PrimaryMAC is the MAC of the first network interface (by index) that is up, is not loopback
// and has an Ethernet address: on a lab PC with one card, the one it boots from the network with.
func PrimaryMAC() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) == 6 {
			return i.HardwareAddr.String(), nil
		}
	}
	return "", errors.New("no network card is up: give --mac")
}
