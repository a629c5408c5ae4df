// Package agent is the terminal agent of tms. The protocol it speaks with its region is package
// agentwire.
//
// The agent runs in a terminal's network-booted in-memory OS (and, later, as a service of the
// installed OS). It tells its region it booted and gets its boot action. For a capture it reads
// the disk, names its chunks, asks the region which ones it lacks, uploads only those, then the
// manifest. For a deploy it first checks that central signed the version: it hashes the manifest
// the region sent into the version id and verifies central's signature of that id with the
// public key it was built with (CentralKey), so a region, or whatever answers in its place,
// cannot make it write bytes central did not sign. Then it writes the version to the disk,
// skipping ranges that already hold the right bytes, flushes and reads everything back to
// verify it. It reports progress as
// it goes. Killed at any point, it starts over with a new boot and redoes only what is missing.
// With nothing to do it waits for commands (reboot, poweroff).
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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"tms/agentwire"
	"tms/disklabel"
	"tms/imageio"
	"tms/manifest"
	"tms/signing"
	"tms/store"
	"tms/transfer"
)

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

// errRebooted means the region moved on (the token belongs to an earlier boot, or the task
// ended): the agent boots again to learn what to do.
var errRebooted = errors.New("the region ended this boot's task")

// Run boots, does what the region says, and boots again, until ctx ends, a poweroff command
// comes, or (with Once) one boot's work is done.
func (a *Agent) Run(ctx context.Context) error {
	if a.Region == nil || a.MAC == "" {
		return errors.New("the agent needs its region's URL and the terminal's MAC")
	}
	c := &Client{Region: a.Region, HTTP: a.client(), MAC: a.MAC, Key: a.Key}
	failures := 0
	pause := func() bool {
		d := a.Backoff
		if d <= 0 {
			d = time.Second
		}
		d = min(d<<min(failures, 6), time.Minute)
		d += time.Duration(rand.Int64N(int64(d)/4 + 1))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		size, err := DiskSize(a.Disk)
		if err != nil {
			a.log().Warn("cannot read the disk's size", "disk", a.Disk, "err", err)
		}
		c.Token = ""
		rep, err := c.Boot(ctx, agentwire.BootRequest{MAC: a.MAC, Disk: a.Disk, DiskSize: size, AgentVersion: Version, BootToken: a.BootToken})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if Permanent(err) {
				return err
			}
			a.log().Warn("region not reached", "region", a.Region.String(), "err", err)
			failures++
			if !pause() {
				break
			}
			continue
		}
		switch rep.Action {
		case agentwire.ActionCapture, agentwire.ActionDeploy:
			c.Token = rep.Token
			err := a.runTask(ctx, c, rep)
			switch {
			case err == nil:
				failures = 0
				if a.Once {
					return nil
				}
				continue
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, errRebooted):
				a.log().Info("task ended by the region", "task", rep.Task, "err", err)
				continue
			}
			failures++
			tries := a.Tries
			if tries <= 0 {
				tries = 5
			}
			if Permanent(err) || failures >= tries {
				a.log().Error("task failed", "task", rep.Task, "err", err)
				if _, rerr := c.Done(ctx, agentwire.Done{Error: err.Error()}); rerr != nil {
					a.log().Warn("could not report the failure", "task", rep.Task, "err", rerr)
				} else {
					failures = 0
				}
				if a.Once {
					return err
				}
			} else {
				a.log().Warn("task interrupted; starting over", "task", rep.Task, "attempt", failures, "err", err)
			}
			if !pause() {
				return nil
			}
		default:
			if a.Once {
				return nil
			}
			off, err := a.idle(ctx, c)
			if off || ctx.Err() != nil {
				return nil
			}
			if err != nil {
				a.log().Warn("command poll failed", "err", err)
				failures++
				if !pause() {
					return nil
				}
			}
		}
	}
	return nil
}

// idle waits for a command; it returns on reboot (to boot again), poweroff (off true) or an
// error.
func (a *Agent) idle(ctx context.Context, c *Client) (off bool, err error) {
	for {
		cmd, err := c.Command(ctx, "30s")
		if err != nil {
			return false, err
		}
		switch cmd {
		case agentwire.CommandReboot:
			a.log().Info("rebooting on the region's command")
			return false, nil
		case agentwire.CommandPoweroff:
			a.log().Info("powering off on the region's command")
			return true, nil
		}
	}
}

// runTask does one boot's task.
func (a *Agent) runTask(ctx context.Context, c *Client, rep agentwire.BootReply) error {
	ti, err := c.Task(ctx)
	if err != nil {
		return taskErr(err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pr := &reporter{c: c, every: a.ProgressEvery, cancel: cancel, log: a.log()}
	stop := pr.start(ctx)
	defer stop()
	a.log().Info("task started", "task", ti.ID, "kind", ti.Kind, "image", ti.Image)
	switch ti.Kind {
	case agentwire.KindCapture:
		res, err := a.capture(ctx, c, ti, pr)
		if err != nil {
			return taskErr(causeOf(ctx, err))
		}
		a.log().Info("capture published", "task", ti.ID, "version", res.Version, "stored_bytes", res.StoredBytes)
		return nil
	case agentwire.KindDeploy:
		d, err := a.deploy(ctx, c, ti, pr)
		if err != nil {
			return taskErr(causeOf(ctx, err))
		}
		stop()
		if _, err := c.Done(context.WithoutCancel(ctx), d); err != nil {
			return taskErr(err)
		}
		a.log().Info("deploy written and verified", "task", ti.ID, "written", d.Written, "skipped", d.Skipped)
		return nil
	}
	return permanent(fmt.Errorf("task %s has kind %q, which this agent does not know", ti.ID, ti.Kind))
}

// causeOf prefers the reason the task's context was canceled (the region ended the task).
func causeOf(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

// taskErr turns the region's "not your task any more" answers into errRebooted.
func taskErr(err error) error {
	var e *APIError
	if errors.As(err, &e) && !e.Retry && (e.Status == http.StatusForbidden || e.Status == http.StatusConflict || e.Status == http.StatusUnauthorized) {
		return fmt.Errorf("%w: %v", errRebooted, err)
	}
	return err
}

// reporter sends progress reports in the background.
type reporter struct {
	c      *Client
	every  time.Duration
	cancel context.CancelCauseFunc
	log    *slog.Logger

	mu    sync.Mutex
	phase agentwire.Phase
	total int64
	done  atomic.Int64
	sent  atomic.Int64 // compressed bytes a capture uploaded
	fetch atomic.Int64 // chunk bytes a deploy fetched
	kick  chan struct{}
}

func (r *reporter) setPhase(phase agentwire.Phase, total int64) {
	r.mu.Lock()
	r.phase, r.total = phase, total
	r.mu.Unlock()
	r.done.Store(0)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *reporter) snapshot() agentwire.Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent, fetched := r.sent.Load(), r.fetch.Load()
	return agentwire.Progress{Phase: r.phase, Total: r.total, Done: min(r.done.Load(), r.total),
		SentBytes: sent, FetchedBytes: fetched, MovedBytes: sent + fetched}
}

func (r *reporter) start(ctx context.Context) (stop func()) {
	every := r.every
	if every <= 0 {
		every = 2 * time.Second
	}
	r.kick = make(chan struct{}, 1)
	r.phase = agentwire.PhaseStarting
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-r.kick:
			}
			err := r.c.Progress(ctx, r.snapshot())
			if ctx.Err() != nil {
				return
			}
			if errors.Is(taskErr(err), errRebooted) {
				r.cancel(taskErr(err))
				return
			}
			if err != nil {
				r.log.Debug("progress report failed", "err", err)
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
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

// batchChunks is how many chunks a capture reads, names and uploads at a time.
const batchChunks = 64

// capture reads the disk, uploads the chunks the region lacks and publishes the manifest.
func (a *Agent) capture(ctx context.Context, c *Client, ti agentwire.TaskInfo, pr *reporter) (agentwire.Result, error) {
	f, err := os.Open(a.Disk)
	if err != nil {
		return agentwire.Result{}, permanent(fmt.Errorf("cannot open the disk: %w", err))
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil || size == 0 {
		return agentwire.Result{}, permanent(fmt.Errorf("disk %s: cannot tell its size or it is empty (%v)", a.Disk, err))
	}
	m := &manifest.Manifest{Format: manifest.Format, Hash: ti.Hash, DiskSize: size, ChunkSize: ti.ChunkSize,
		Meta:   manifest.Meta{Name: ti.Image, Created: time.Now().UTC().Truncate(time.Second), Source: "capture"},
		Chunks: make([]manifest.ID, manifest.NumChunks(size, ti.ChunkSize))}
	if err := m.Validate(); err != nil {
		return agentwire.Result{}, permanent(fmt.Errorf("cannot capture disk %s: %w", a.Disk, err))
	}
	if pt, err := disklabel.Read(f, size); err != nil {
		a.log().Warn("partition table not readable; captured without it", "err", err)
	} else {
		m.Meta.Partitions = pt
	}
	up := &uploader{c: c, f: f, m: m, jobs: a.jobs(), pr: pr, codec: store.NewCodec(0), known: map[manifest.ID]bool{}}
	pr.setPhase(agentwire.PhaseReading, size)
	if err := up.scan(ctx); err != nil {
		return agentwire.Result{}, err
	}
	enc, err := manifest.Encode(m)
	if err != nil {
		return agentwire.Result{}, permanent(err)
	}
	for try := 0; ; try++ {
		res, err := c.Publish(ctx, enc)
		var e *APIError
		if err == nil || try >= 2 || !errors.As(err, &e) || e.Status != http.StatusConflict || !e.Retry {
			return res, err
		}
		// The region lost chunks it had (its store was cleaned meanwhile): send them again.
		a.log().Warn("region asks for chunks again", "err", err)
		if err := up.resend(ctx); err != nil {
			return agentwire.Result{}, err
		}
	}
}

// uploader cuts the disk into chunks, names them, and uploads the ones the region lacks.
type uploader struct {
	c     *Client
	f     *os.File
	m     *manifest.Manifest
	jobs  int
	pr    *reporter
	codec *store.Codec
	known map[manifest.ID]bool // held by the region or uploaded in this run
}

// batch is a run of consecutive chunks read from the disk.
type batch struct {
	first, n int
	buf      []byte
}

func (u *uploader) chunk(b *batch, i int) []byte {
	cs := u.m.ChunkSize
	_, n := u.m.ChunkRange(b.first + i)
	return b.buf[int64(i)*cs : int64(i)*cs+n]
}

// scan reads and names every chunk, in batches, while the previous batch uploads.
func (u *uploader) scan(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	ready := make(chan *batch, 1)
	free := make(chan *batch, 2)
	for range 2 {
		free <- &batch{buf: make([]byte, batchChunks*u.m.ChunkSize)}
	}
	g.Go(func() error {
		defer close(ready)
		for first := 0; first < len(u.m.Chunks); first += batchChunks {
			var b *batch
			select {
			case b = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			b.first, b.n = first, min(batchChunks, len(u.m.Chunks)-first)
			if err := u.read(gctx, b); err != nil {
				return err
			}
			select {
			case ready <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	g.Go(func() error {
		for b := range ready {
			if err := u.send(gctx, b); err != nil {
				return err
			}
			end, n := u.m.ChunkRange(b.first + b.n - 1)
			u.pr.done.Store(end + n)
			free <- b
		}
		return nil
	})
	return g.Wait()
}

// read fills b from the disk and names its chunks.
func (u *uploader) read(ctx context.Context, b *batch) error {
	off, _ := u.m.ChunkRange(b.first)
	last, n := u.m.ChunkRange(b.first + b.n - 1)
	if _, err := u.f.ReadAt(b.buf[:last+n-off], off); err != nil {
		return permanent(fmt.Errorf("disk %s: read at %d: %w", u.f.Name(), off, err))
	}
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(u.jobs)
	for i := range b.n {
		g.Go(func() error {
			data := u.chunk(b, i)
			if isZero(data) {
				u.m.Chunks[b.first+i] = manifest.ID{}
			} else {
				u.m.Chunks[b.first+i] = u.m.Hash.Sum(data)
			}
			return nil
		})
	}
	return g.Wait()
}

var zeros = make([]byte, manifest.MaxChunkSize)

func isZero(b []byte) bool { return string(b) == string(zeros[:len(b)]) }

// send asks which of b's chunks the region lacks and uploads them.
func (u *uploader) send(ctx context.Context, b *batch) error {
	var ask []manifest.ID
	where := map[manifest.ID]int{}
	for i := range b.n {
		id := u.m.Chunks[b.first+i]
		if id.IsZero() || u.known[id] {
			continue
		}
		if _, dup := where[id]; !dup {
			where[id] = i
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	missing, err := u.c.Missing(ctx, ask)
	if err != nil {
		return err
	}
	var need []int
	for _, id := range missing {
		i, ok := where[id]
		if !ok {
			return fmt.Errorf("region asked for chunk %s, which this batch does not hold", id.Short())
		}
		need = append(need, i)
	}
	if err := u.upload(ctx, len(missing), func(k int) ([]byte, manifest.ID) {
		i := need[k]
		return u.chunk(b, i), u.m.Chunks[b.first+i]
	}); err != nil {
		return err
	}
	for _, id := range ask {
		u.known[id] = true
	}
	return nil
}

// upload compresses n chunks (get returns the k-th) and sends them as one batch.
func (u *uploader) upload(ctx context.Context, n int, get func(k int) ([]byte, manifest.ID)) error {
	if n == 0 {
		return nil
	}
	frames := make([][]byte, n)
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(u.jobs)
	for k := range n {
		g.Go(func() error {
			data, _ := get(k)
			frames[k] = u.codec.Compress(nil, data)
			return nil
		})
	}
	g.Wait()
	var body []byte
	for k := range n {
		_, id := get(k)
		body = agentwire.AppendBatch(body, id, frames[k])
	}
	if err := u.c.Upload(ctx, body); err != nil {
		return err
	}
	for _, fr := range frames {
		u.pr.sent.Add(int64(len(fr)))
	}
	return nil
}

// resend uploads every chunk of the manifest that the region says it lacks, re-reading each
// from the disk and checking it still has the bytes it was named for.
func (u *uploader) resend(ctx context.Context) error {
	at := map[manifest.ID]int{}
	var ids []manifest.ID
	for i, id := range u.m.Chunks {
		if _, ok := at[id]; !ok && !id.IsZero() {
			at[id] = i
			ids = append(ids, id)
		}
	}
	for len(ids) > 0 {
		n := min(len(ids), agentwire.MaxMissingQuery)
		missing, err := u.c.Missing(ctx, ids[:n])
		if err != nil {
			return err
		}
		ids = ids[n:]
		for len(missing) > 0 {
			k := min(len(missing), batchChunks)
			bufs := make([][]byte, k)
			for j, id := range missing[:k] {
				off, size := u.m.ChunkRange(at[id])
				bufs[j] = make([]byte, size)
				if _, err := u.f.ReadAt(bufs[j], off); err != nil {
					return permanent(fmt.Errorf("disk %s: read at %d: %w", u.f.Name(), off, err))
				}
				if u.m.Hash.Sum(bufs[j]) != id {
					return permanent(fmt.Errorf("disk %s changed while it was captured (at offset %d): capture it again while nothing writes to it", u.f.Name(), off))
				}
			}
			part := missing[:k]
			if err := u.upload(ctx, k, func(j int) ([]byte, manifest.ID) { return bufs[j], part[j] }); err != nil {
				return err
			}
			missing = missing[k:]
		}
	}
	return nil
}

// deploy writes the task's version to the disk and verifies it.
func (a *Agent) deploy(ctx context.Context, c *Client, ti agentwire.TaskInfo, pr *reporter) (agentwire.Done, error) {
	id, err := manifest.ParseID(ti.Version)
	if err != nil {
		return agentwire.Done{}, permanent(fmt.Errorf("task names version %q: %w", ti.Version, err))
	}
	size, err := DiskSize(a.Disk)
	if err != nil {
		return agentwire.Done{}, permanent(fmt.Errorf("cannot open the disk: %w", err))
	}
	if size < ti.DiskSize {
		return agentwire.Done{}, permanent(fmt.Errorf("disk %s holds %d bytes; image %s needs %d", a.Disk, size, ti.Image, ti.DiskSize))
	}
	if a.CentralKey.IsZero() {
		return agentwire.Done{}, permanent(errors.New("this agent has no central public key: rebuild the boot environment with --central-key"))
	}
	b, err := c.GetManifestBytes(ctx, id)
	if err != nil {
		return agentwire.Done{}, err
	}
	// Nothing is written before the version is known to be central's: the id is recomputed
	// from the bytes received, and central's signature of that id checked.
	if err := a.CentralKey.VerifyManifest(id, b, signing.Signature{KeyID: ti.Signer, Signature: ti.Signature}); err != nil {
		return agentwire.Done{}, permanent(fmt.Errorf("refusing to deploy %s: %w", id.Short(), err))
	}
	m, err := manifest.Decode(b)
	if err != nil {
		return agentwire.Done{}, fmt.Errorf("manifest of %s: %w", id.Short(), err)
	}
	pr.setPhase(agentwire.PhaseWriting, m.DiskSize)
	getter := &countingGetter{g: transfer.NewGetter(c), pr: pr}
	res, err := imageio.Export(ctx, getter, &store.Version{ID: id, Manifest: m, Encoded: b}, a.Disk, imageio.ExportOptions{
		Jobs: a.jobs(), Verify: true, FixedSize: true, Log: a.log(),
		Progress: func(done, total int64) {
			if done == total {
				pr.setPhase(agentwire.PhaseVerifying, total)
			} else {
				pr.done.Store(done)
			}
		},
	})
	if err != nil {
		return agentwire.Done{}, err
	}
	return agentwire.Done{Written: res.Written, WrittenBytes: res.WrittenBytes, Skipped: res.Skipped, Verified: true}, nil
}

// countingGetter counts the chunk bytes a deploy fetches (decompressed and checked).
type countingGetter struct {
	g  *transfer.Getter
	pr *reporter
}

func (g *countingGetter) GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	data, err := g.g.GetChunk(ctx, h, id, buf)
	if err == nil {
		g.pr.fetch.Add(int64(len(data)))
	}
	return data, err
}
