// Package agent is the terminal agent of tms. The protocol it speaks with its region is package
// agentwire.
//
// The agent runs in a terminal's network-booted in-memory OS, and as a service of the installed
// OS (Service: it obeys power commands and runs no task on the live disk). It tells its region
// it booted and gets its boot action. For a capture it reads the disk, names its chunks, asks
// the region which ones it lacks, uploads only those, then the manifest. For a deploy it first
// checks that central signed the version: it hashes the manifest the region sent into the
// version id and verifies central's signature of that id with the public key it was built with
// (CentralKey), so a region, or whatever answers in its place, cannot make it write bytes
// central did not sign. Then it writes the version to the disk, skipping ranges that already
// hold the right bytes, flushes and reads everything back to verify it. When several terminals
// write the version at once, the chunks come from each other as the region's swarm tracker
// assigns them, each checked against its id, and the agent serves what it holds to the others
// over TLS (swarm.go, peer.go; docs/swarm.md). An update checks the
// target the same way, reads the manifest of the version the disk holds (its id recomputed from
// the bytes), and writes and reads back only the chunks whose ids differ between the two. It
// reports progress as
// it goes. Killed at any point, it starts over with a new boot and redoes only what is missing.
// With nothing to do it waits for commands (reboot, poweroff), or runs Installed.
//
// The agent links no Temporal or database code: it is the static /init of the in-memory OS.
//
//	a := &agent.Agent{Region: u, MAC: "52:54:00:12:34:56", Disk: "/dev/sda", CentralKey: pub}
//	err := a.Run(ctx)
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"time"

	"tms/signing"
)

// NetBootResult is what a simulated network boot read from its kernel command line.
type NetBootResult struct {
	Token   string // tms.token
	BootEnv string // tms.bootenv
}

// Version is the agent's version, reported at boot.
var Version = "dev"

// Agent is one terminal's agent.
type Agent struct {
	Region *url.URL // the region's HTTP service
	MAC    string
	Disk   string // the disk to capture or write (a block device, or a file standing in for one)
	// BootToken is the per-boot secret from the kernel command line, sent with each boot
	// request (empty when the region gave none).
	BootToken string
	// BootEnv is the version of the in-memory OS the agent runs in, from the kernel command
	// line (tms.bootenv; empty when the region served its plain boot directory): a probe
	// reports it.
	BootEnv string
	// NetBoot, if set, is the network boot that comes before each boot request of a simulated
	// terminal (tms dev): it asks the region's boot service for the terminal's script, and
	// when the script boots the in-memory OS, fetches and checks its kernel and initrd and
	// returns the command line's token and bootenv version (a zero NetBootResult: the script
	// boots the terminal's own disk). An error means the terminal would hang: the agent
	// never starts. Nil in the real in-memory OS, where the firmware and kernel did it.
	NetBoot func(ctx context.Context) (NetBootResult, error)
	// Key is the terminal's agent key (the installed OS's agent, or a simulated terminal), which
	// signs its boot requests and command polls; nil in the in-memory OS.
	Key []byte
	// CentralKey is central's public key: the agent deploys only versions central signed. An
	// agent without one refuses every deploy.
	CentralKey signing.PublicKey
	// RootCAs, if set, are the certificate authorities the agent trusts for HTTPS to its
	// region (the boot environment's /etc/tms/ca.pem); nil means the system's.
	RootCAs *x509.CertPool
	HTTP    *http.Client
	Log     *slog.Logger
	// Jobs is how many chunks are handled at once (default: 2 per CPU, at least 4).
	Jobs int
	// PeerListen is where a member of a swarm serves its peers (default ":0": every address,
	// a port the system picks; the region tells peers the address the agent reaches it from).
	PeerListen string
	// Window is how many bytes of chunks a deploy or update asks its region for ahead of
	// writing them (default 64 MiB; see transfer.WindowOptions.Bytes): what keeps a link with
	// a long round trip full.
	Window int64
	// Once makes Run return after the first task (or at once when there is none), as the
	// in-memory OS does: it reboots afterwards.
	Once bool
	// Tries is how many times a task is attempted, each from a new boot, before the agent
	// reports it failed (default 5). Refusals (a disk too small) are reported at once.
	Tries int
	// ProgressEvery is how often progress is reported (default 2 s).
	ProgressEvery time.Duration
	// Backoff is the first pause after a failure, doubled up to a minute (default 1 s).
	Backoff time.Duration
	// FailoverAfter is how long the region's server may fail every request before the agent
	// turns to the next server the region named (default DefaultFailoverAfter; failover.go).
	FailoverAfter time.Duration
	// Installed, if set, is the terminal's installed OS: what runs after a boot whose action is
	// local (a simulated terminal runs a Service in it). It returns when the terminal goes down:
	// off, or rebooting (then the agent boots again). Nil means the agent waits for commands
	// itself.
	Installed func(ctx context.Context) (off bool, err error)

	// Tests: peerWrap wraps the handler of the agent's peer service (to make it misbehave),
	// peerTimeout replaces peerFetchTimeout.
	peerWrap    func(http.Handler) http.Handler
	peerTimeout time.Duration
}

func (a *Agent) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

// client is the HTTP client the agent uses: a.HTTP, with a transport that keeps a connection
// per concurrent chunk request open (the default keeps two per host, and a deploy of thousands
// of chunks would open a new connection for most of them).
func (a *Agent) client() *http.Client {
	c := &http.Client{}
	if a.HTTP != nil {
		*c = *a.HTTP
	}
	if c.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 2 * a.jobs()
		if a.RootCAs != nil {
			t.TLSClientConfig = &tls.Config{RootCAs: a.RootCAs, MinVersion: tls.VersionTLS12}
		}
		c.Transport = t
	}
	return c
}

func (a *Agent) jobs() int {
	if a.Jobs > 0 {
		return a.Jobs
	}
	return max(4, 2*runtime.GOMAXPROCS(0))
}

// DiskSize returns the size of a disk (block device or file); 0 and no error if path is empty.
func DiskSize(path string) (int64, error) {
	if path == "" {
		return 0, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}
