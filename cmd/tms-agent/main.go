// Command tms-agent is the terminal agent of tms: it captures the terminal's disk to its region
// or deploys an image to it, as the region's boot action says. It is built static (CGO_ENABLED=0)
// to be the /init of the network-booted in-memory OS: started as PID 1 it sets the system up and
// runs for one boot (package tms/agent/initos). Otherwise it runs with flags, for example against
// a disk file; with --key-file and --central-key such a process is a simulated terminal as
// devenv's are (the lab of bench/swarm runs one per network namespace). In a terminal's
// installed OS it runs as a service (tms-agent service, see docs/agent.md and
// dist/systemd/tms-agent.service): it polls its region for power commands.
//
//	tms-agent --region http://10.0.5.2:8301 --mac 52:54:00:12:34:56 --disk /dev/sda --central-key /etc/tms/central.pub
//	tms-agent --region http://10.98.0.1:8301 --mac 52:54:00:01:00:01 --disk pc1.disk --key-file pc1.key --central-key central.pub --once
//	tms-agent service --region https://10.0.5.2:8081 --mac 52:54:00:12:34:56 --disk /dev/sda --key-file /etc/tms/agent.key
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"tms/agent"
	"tms/agent/initos"
	"tms/signing"
)

func main() {
	if os.Getpid() == 1 {
		initos.Main() // never returns: it reboots
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tms-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "service" {
		return service(args[1:])
	}
	a, err := parseRun(args)
	if err != nil || a == nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

// parseRun reads the run mode's flags into the agent to run; nil and no error for --version.
func parseRun(args []string) (*agent.Agent, error) {
	fs := flag.NewFlagSet("tms-agent", flag.ContinueOnError)
	region := fs.String("region", "", "URL of the region's HTTP service, for example http://10.0.5.2:8301")
	mac := fs.String("mac", "", "the terminal's MAC address")
	disk := fs.String("disk", "", "the disk to capture or write: a block device, or a file standing in for one")
	once := fs.Bool("once", false, "return after one boot's task (the in-memory OS reboots afterwards)")
	jobs := fs.Int("jobs", 0, "chunks handled at once (default: 2 per CPU, at least 4)")
	keyFile := fs.String("key-file", "", "the terminal's agent key (mode 600), to sign boot requests as the installed OS's agent does; empty: none, as in the in-memory OS")
	centralKey := fs.String("central-key", "", "file holding central's public key in its text form (as /etc/tms/central.pub in the in-memory OS); without it every deploy is refused")
	verbose := fs.Bool("v", false, "log debug messages")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *version {
		fmt.Println("tms-agent", agent.Version)
		return nil, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *region == "" || *mac == "" {
		return nil, errors.New("--region and --mac are required")
	}
	u, err := url.Parse(*region)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--region %q is not an http(s) URL", *region)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	a := &agent.Agent{Region: u, MAC: *mac, Disk: *disk, Once: *once, Jobs: *jobs, Log: log,
		HTTP: &http.Client{Timeout: 2 * time.Minute}}
	if *keyFile != "" {
		if a.Key, err = agent.ReadKeyFile(*keyFile); err != nil {
			return nil, fmt.Errorf("--key-file: %w", err)
		}
	}
	if *centralKey != "" {
		// A file only, as the in-memory OS has it: a key typed on the command line would
		// be one more place to forget to update.
		if strings.HasPrefix(strings.TrimSpace(*centralKey), signing.PublicKeyPrefix) {
			return nil, fmt.Errorf("--central-key names a file holding the key, not the key itself")
		}
		if a.CentralKey, err = signing.LoadPublicKey(*centralKey); err != nil {
			return nil, fmt.Errorf("--central-key: %w", err)
		}
	}
	return a, nil
}

// service runs the agent of the installed OS: it polls the region for power commands with the
// terminal's agent key and obeys them.
func service(args []string) error {
	fs := flag.NewFlagSet("tms-agent service", flag.ContinueOnError)
	region := fs.String("region", "", "URL of the region's HTTP service, for example https://10.0.5.2:8081")
	mac := fs.String("mac", "", "the terminal's MAC address, or auto: the first network card that is up")
	keyFile := fs.String("key-file", "/etc/tms/agent.key", "the terminal's agent key (mode 600)")
	enrollToken := fs.String("enroll-token", os.Getenv("TMS_ENROLL_TOKEN"), "a token from 'tms terminal enroll-token', traded for the agent key when --key-file does not exist yet")
	disk := fs.String("disk", "", "the terminal's disk, checked against the version the region recorded (read only; empty: no check)")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *region == "" || *mac == "" {
		return errors.New("service: --region and --mac are required")
	}
	if *mac == "auto" {
		m, err := agent.PrimaryMAC()
		if err != nil {
			return err
		}
		*mac = m
	}
	u, err := url.Parse(*region)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--region %q is not an http(s) URL", *region)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	key, err := agent.ReadKeyFile(*keyFile)
	if errors.Is(err, os.ErrNotExist) && *enrollToken != "" {
		c := &agent.Client{Region: u, MAC: *mac, HTTP: &http.Client{Timeout: time.Minute}}
		if key, err = agent.Enroll(ctx, c, *enrollToken, *keyFile); err == nil {
			log.Info("enrolled: the agent key is in " + *keyFile)
		}
	}
	if err != nil {
		return err
	}
	s := &agent.Service{Region: u, MAC: *mac, Key: key, Disk: *disk, Power: agent.SystemPower{Log: log}, Log: log,
		HTTP: &http.Client{Timeout: 2 * time.Minute}}
	return s.Run(ctx)
}
