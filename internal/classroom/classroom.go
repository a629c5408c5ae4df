// Package classroom runs a tms region and real tms-agent processes in a lab of network
// namespaces (package netlab): the region's services in one host, each terminal's agent in a
// host of its own, every port shaped. The swarm and link benchmarks and the CI netns test use it.
//
// A process cannot run goroutines in several namespaces (setns acts on one OS thread), so the
// test or benchmark binary runs itself again inside the region's host, as e2e does:
//
//	// parent: build tms-agent, create and shape the lab, re-run this test inside host 0
//	s, err := classroom.Prepare(ctx, classroom.PrepareOptions{Terminals: 10, Rate: 16e6, Dir: dir})
//	defer s.Close()
//	err = s.RunChild(ctx, "-test.run=^TestSwarm$", "-test.v")
//
//	// child (classroom.ChildSpec() reports true): the region, central and Temporal in-process
//	c, err := classroom.Start(ctx, classroom.Options{Spec: spec, Terminals: 10, DiskSize: size})
//	defer c.Stop()
//	img, err := c.Import(ctx, "image.raw", "lab")
//	d, err := c.StartDeploy(ctx, classroom.DeployOptions{Image: "lab", Terminals: c.Names()})
//	run, err := d.Wait(ctx)
//
// The child runs devenv with everything listening on host 0's address (10.98.0.1) and one region,
// whose terminals are started through devenv's StartTerminal hook: each one is
// `ip netns exec HOST tms-agent --region http://10.98.0.1:PORT --mac … --disk … --key-file …
// --central-key … --once`, in host i+1 for terminal i. Such an agent boots once, does the task
// its boot action names (or nothing) and exits, so the terminal is off until the region wakes it
// with a magic packet, as a deploy does. What each process printed is in
// Dir/run/logs/NAME.log (Options.Name names run).
package classroom

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/agentwire"
	"tms/devenv"
	"tms/imageio"
	"tms/internal/netlab"
	"tms/internal/pxeprobe"
	"tms/manifest"
	"tms/metrics"
	"tms/server"
	"tms/swarm"
	"tms/workflows"
)

// childEnv carries the Spec from the parent to the child it runs in the region's host.
const childEnv = "TMS_CLASSROOM_CHILD"

// Region is the id of the classroom's region.
const Region = "lab"

// Spec is what the child needs from its parent: the lab and the agent binary.
type Spec struct {
	Lab   string // the lab's name (netlab.Lab.Name)
	Hosts int
	Rate  int64  // bit/s each port is shaped at; 0: unshaped
	Agent string // the built tms-agent
	Dir   string // a directory the child may use, kept by the parent
}

// ChildSpec returns the spec the parent passed, and whether this process is the child.
func ChildSpec() (Spec, bool, error) {
	v := os.Getenv(childEnv)
	if v == "" {
		return Spec{}, false, nil
	}
	var s Spec
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return s, true, fmt.Errorf("classroom: %s: %w", childEnv, err)
	}
	return s, true, nil
}

// PrepareOptions describe the lab a parent sets up.
type PrepareOptions struct {
	Terminals int   // agent hosts (the lab has one more, host 0, for the region)
	Extra     int   // more hosts after the terminals' (for example a curl client)
	Rate      int64 // bit/s per port each way; 0: unshaped
	Dir       string
}

// Setup is the parent's side: a built agent and a lab.
type Setup struct {
	Lab  *netlab.Lab
	Spec Spec
}

// Prepare builds tms-agent into Dir and creates (and shapes) the lab. Close deletes the lab.
func Prepare(ctx context.Context, o PrepareOptions) (*Setup, error) {
	bin := filepath.Join(o.Dir, "tms-agent")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "tms/cmd/tms-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("classroom: go build tms-agent: %w\n%s", err, out)
	}
	lab, err := netlab.New(ctx, netlab.Options{Hosts: 1 + o.Terminals + o.Extra})
	if err != nil {
		return nil, err
	}
	if o.Rate > 0 {
		if err := lab.Shape(ctx, o.Rate); err != nil {
			lab.Close()
			return nil, err
		}
	}
	return &Setup{Lab: lab, Spec: Spec{Lab: lab.Name, Hosts: len(lab.Hosts), Rate: o.Rate, Agent: bin, Dir: o.Dir}}, nil
}

// Close deletes the lab.
func (s *Setup) Close() error { return s.Lab.Close() }

// RunChild runs this binary again in the region's host (host 0) with args, its output on
// this process's, and waits for it. The child dies with this process.
func (s *Setup) RunChild(ctx context.Context, args ...string) error {
	spec, err := json.Marshal(s.Spec)
	if err != nil {
		return err
	}
	cmd := s.Lab.Command(ctx, 0, os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd.Run()
}

// Options describe the classroom a child starts.
type Options struct {
	Spec      Spec
	Terminals int   // at most Spec.Hosts-1
	DiskSize  int64 // each terminal's disk
	Unicast   bool  // devenv.Options.Unicast
	Log       *slog.Logger
	// Name is the subdirectory of Spec.Dir the classroom keeps its data and logs in (default
	// "run"): a child that starts several classrooms, one after the other, names each.
	Name string
	// Probe, if set, are the arguments that run this binary again as a network boot's probe
	// (package pxeprobe) in a terminal's host: every boot of a terminal then asks DHCP which
	// server answers it, and its agent goes to the server the answer's iPXE script names,
	// instead of the devenv region's endpoint. Boots records what each boot found.
	Probe []string
	// Region changes the devenv region's server options (devenv.Options.RegionOptions), for
	// instance to turn its boot service on.
	Region func(*server.RegionOptions)
}

// Classroom is a running region with agent processes in the lab.
type Classroom struct {
	Env  *devenv.Env
	Lab  *netlab.Lab
	opts Options
	dir  string // Spec.Dir/Name

	mu    sync.Mutex
	exits map[string][]exit          // by terminal name
	boots map[string][]pxeprobe.Boot // by terminal name, with Options.Probe
}

type exit struct {
	at time.Time
	ok bool
}

// Start starts Temporal, central and the region on host 0's address, and the terminals'
// agents in their hosts. It waits until every agent's first boot (nothing to do) is over.
func Start(ctx context.Context, o Options) (_ *Classroom, err error) {
	if o.Terminals < 1 || o.Terminals > o.Spec.Hosts-1 {
		return nil, fmt.Errorf("classroom: %d terminals in a lab of %d hosts", o.Terminals, o.Spec.Hosts)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.Name == "" {
		o.Name = "run"
	}
	c := &Classroom{Lab: netlab.Attach(o.Spec.Lab, o.Spec.Hosts), opts: o, exits: map[string][]exit{}, boots: map[string][]pxeprobe.Boot{},
		dir: filepath.Join(o.Spec.Dir, o.Name)}
	dataDir := filepath.Join(c.dir, "tms")
	if err := os.MkdirAll(filepath.Join(c.dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	// devenv writes central's public key there before it creates the terminals.
	centralKey := filepath.Join(dataDir, "central.pub")
	c.Env, err = devenv.Start(ctx, devenv.Options{DataDir: dataDir, Host: c.Lab.Hosts[0].Addr.String(),
		TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1, Regions: []string{Region},
		Terminals: o.Terminals, DiskSize: o.DiskSize, Log: o.Log, TemporalLevel: slog.LevelError,
		Segment: netlab.Subnet.String(), Unicast: o.Unicast, RegionOptions: func(_ string, ro *server.RegionOptions) {
			if o.Region != nil {
				o.Region(ro)
			}
		},
		StartTerminal: func(ctx context.Context, t devenv.Terminal) error { return c.runAgent(ctx, t, centralKey) }})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := c.waitOff(ctx, c.Names()); err != nil {
		return nil, fmt.Errorf("classroom: the agents' first boot: %w", err)
	}
	return c, nil
}

// host is terminal name's host in the lab: devenv names the region's terminals lab-pc1,
// lab-pc2, …, and terminal lab-pcN is in host N.
func (c *Classroom) host(name string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(name, Region+"-pc%d", &n); err != nil || n < 1 || n >= len(c.Lab.Hosts) || name != fmt.Sprintf("%s-pc%d", Region, n) {
		return 0, fmt.Errorf("classroom: terminal %s has no host in a lab of %d", name, len(c.Lab.Hosts))
	}
	return n, nil
}

// runAgent runs terminal t's agent for one boot in its host, until it exits or ctx ends.
func (c *Classroom) runAgent(ctx context.Context, t devenv.Terminal, centralKey string) error {
	h, err := c.host(t.Name)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, "logs", t.Name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	region := t.Endpoint
	if len(c.opts.Probe) > 0 {
		b, err := c.probe(ctx, h, t.MAC, logf)
		if err != nil {
			return err
		}
		if len(b.Offers) == 0 {
			fmt.Fprintf(logf, "--- %s: no DHCP offer: the PC stays in its firmware\n", time.Now().Format(time.RFC3339Nano))
			return errors.New("classroom: no DHCP offer")
		}
		region = b.Region
	}
	args := []string{"--region", region, "--mac", t.MAC, "--disk", t.Disk, "--key-file", t.KeyFile, "--central-key", centralKey, "--once"}
	if os.Getenv("TMS_LAB_VERBOSE") != "" {
		args = append(args, "-v") // every chunk and its source in the agents' logs
	}
	cmd := c.Lab.Command(ctx, h, c.opts.Spec.Agent, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(logf, "--- %s: started\n", time.Now().Format(time.RFC3339Nano))
	err = cmd.Run()
	c.mu.Lock()
	c.exits[t.Name] = append(c.exits[t.Name], exit{at: time.Now(), ok: err == nil})
	c.mu.Unlock()
	fmt.Fprintf(logf, "--- %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
	if ctx.Err() != nil {
		return nil // switched off
	}
	return err
}

// probe runs this binary's network boot probe in host h for mac and records what it found.
func (c *Classroom) probe(ctx context.Context, h int, mac string, logf io.Writer) (pxeprobe.Boot, error) {
	req, err := json.Marshal(pxeprobe.Request{Interface: netlab.HostIf, MAC: mac, Wait: 2 * time.Second})
	if err != nil {
		return pxeprobe.Boot{}, err
	}
	cmd := c.Lab.Command(ctx, h, os.Args[0], c.opts.Probe...)
	cmd.Env = append(os.Environ(), pxeprobe.ChildEnv+"="+string(req))
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		return pxeprobe.Boot{}, fmt.Errorf("classroom: the boot probe of %s: %w", mac, err)
	}
	// The test binary prints its own lines (PASS, ok); the Boot is the JSON line.
	var b pxeprobe.Boot
	found := false
	for _, line := range bytes.Split(out, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(`{"offers"`)) {
			if err := json.Unmarshal(line, &b); err != nil {
				return b, err
			}
			found = true
		}
	}
	if !found {
		return b, fmt.Errorf("classroom: the boot probe of %s printed no result:\n%s", mac, out)
	}
	fmt.Fprintf(logf, "--- %s: network boot: offers %v, agent to %s (task %v)\n", time.Now().Format(time.RFC3339Nano), b.Offers, b.Region, b.Task)
	c.mu.Lock()
	for _, t := range c.Env.Terminals {
		if t.MAC == mac {
			c.boots[t.Name] = append(c.boots[t.Name], b)
		}
	}
	c.mu.Unlock()
	return b, nil
}

// Probe runs the network boot probe of terminal name now (its DHCP offers: which server
// answers it), without booting it.
func (c *Classroom) Probe(ctx context.Context, name string) (pxeprobe.Boot, error) {
	h, err := c.host(name)
	if err != nil {
		return pxeprobe.Boot{}, err
	}
	t, _ := c.Env.Terminal(name)
	return c.probe(ctx, h, t.MAC, io.Discard)
}

// Boots returns what each network boot of terminal name found (Options.Probe).
func (c *Classroom) Boots(name string) []pxeprobe.Boot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]pxeprobe.Boot(nil), c.boots[name]...)
}

// waitOff waits until the named terminals are off.
func (c *Classroom) waitOff(ctx context.Context, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		on := 0
		for _, n := range names {
			if c.Env.On(n) {
				on++
			}
		}
		if on == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d terminals still on: %w", on, len(names), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Names are the terminals' names, in host order.
func (c *Classroom) Names() []string {
	var n []string
	for _, t := range c.Env.Terminals {
		n = append(n, t.Name)
	}
	return n
}

// Stop stops the agents and everything devenv runs.
func (c *Classroom) Stop() {
	if c.Env != nil {
		c.Env.Stop()
	}
}

// Image is an image imported into the region and signed by central.
type Image struct {
	Name        string
	Version     string
	DiskSize    int64
	StoredBytes int64             // the compressed bytes of its distinct chunks in the region's store
	Sum         [sha256.Size]byte // of the raw image
}

// Import imports the raw disk image at path into the region's store as name:latest and has
// central register and sign it, as tms image import on a regional server does.
func (c *Classroom) Import(ctx context.Context, path, name string) (Image, error) {
	st := c.Env.RegionStore(Region)
	imp, err := imageio.Import(ctx, st, path, imageio.ImportOptions{Name: name})
	if err != nil {
		return Image{}, err
	}
	info := activities.VersionInfo{Version: imp.Version.ID.String(), Name: name, DiskSize: imp.DiskSize,
		ChunkSize: imp.Version.Manifest.ChunkSize, StoredBytes: imp.Stats.StoredBytes, Created: imp.Version.Manifest.Meta.Created}
	run, err := c.Env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.CentralQueue},
		workflows.RegisterVersion, activities.RegisterVersionInput{Info: info, Tag: "latest", Region: Region})
	if err != nil {
		return Image{}, err
	}
	if err := run.Get(ctx, nil); err != nil {
		return Image{}, fmt.Errorf("classroom: registering %s: %w", name, err)
	}
	img := Image{Name: name, Version: info.Version, DiskSize: imp.DiskSize, StoredBytes: imp.Stats.StoredBytes}
	img.Sum, err = FileSum(path)
	return img, err
}

// WriteFrames writes the stored frames of img's distinct chunks back to back to the file at
// path (StoredBytes in all), for a baseline that moves the same bytes as a deploy.
func (c *Classroom) WriteFrames(ctx context.Context, img Image, path string) error {
	st := c.Env.RegionStore(Region)
	id, err := manifest.ParseID(img.Version)
	if err != nil {
		return err
	}
	v, err := st.GetManifest(ctx, id)
	if err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	for _, cid := range swarm.Chunks(v.Manifest) {
		frame, err := st.GetChunkRaw(ctx, v.Manifest.Hash, cid)
		if err == nil {
			_, err = out.Write(frame)
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

// FileSum is the SHA-256 of a file.
func FileSum(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// EmptyDisks makes the named terminals' disks empty again (all zeros, sparse), as new PCs'.
// The terminals must be off.
func (c *Classroom) EmptyDisks(names []string) error {
	for _, n := range names {
		t, ok := c.Env.Terminal(n)
		if !ok {
			return fmt.Errorf("classroom: no terminal %s", n)
		}
		if c.Env.On(n) {
			return fmt.Errorf("classroom: terminal %s is on", n)
		}
		if err := os.Truncate(t.Disk, 0); err != nil {
			return err
		}
		if err := os.Truncate(t.Disk, c.opts.DiskSize); err != nil {
			return err
		}
	}
	return nil
}

// DeployOptions describe a deploy.
type DeployOptions struct {
	Image     string
	Terminals []string
	Timeouts  workflows.AgentTimeouts
}

// Deploying is a deploy under way.
type Deploying struct {
	c      *Classroom
	run    client.WorkflowRun
	opts   DeployOptions
	Start  time.Time
	before netlab.Counters
	chunks int64 // the region's agent chunk bytes out at the start
}

// StartDeploy starts the DeployImage workflow for the named terminals, all at once (the
// concurrency limit is the number of terminals). The terminals must be off (their agents
// exited), as after Start or an earlier deploy.
func (c *Classroom) StartDeploy(ctx context.Context, o DeployOptions) (*Deploying, error) {
	if err := c.waitOff(ctx, o.Terminals); err != nil {
		return nil, err
	}
	before, err := c.Lab.Counters(ctx, 0)
	if err != nil {
		return nil, err
	}
	chunks, err := c.chunkBytesOut()
	if err != nil {
		return nil, err
	}
	d := &Deploying{c: c, opts: o, before: before, chunks: chunks, Start: time.Now()}
	d.run, err = c.Env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue(Region)},
		workflows.DeployImage, workflows.DeployImageInput{Region: Region, Terminals: o.Terminals, Image: o.Image,
			Concurrency: len(o.Terminals), Timeouts: o.Timeouts})
	return d, err
}

// Progress is the share (0…1) of terminal name's disk its agent reported handled in this
// deploy (writing, then verifying: the disk twice), 0 before its first report.
func (d *Deploying) Progress(ctx context.Context, name string) (float64, error) {
	t, ok := d.c.Env.Terminal(name)
	if !ok {
		return 0, fmt.Errorf("classroom: no terminal %s", name)
	}
	tasks, err := d.c.Env.Regions[Region].Inventory.Tasks(ctx, t.MAC, 1)
	if err != nil || len(tasks) == 0 || tasks[0].Created.Before(d.Start.Add(-time.Second)) {
		return 0, err
	}
	if tasks[0].Finished() && tasks[0].Error == "" {
		return 1, nil
	}
	var p agentwire.Progress
	if tasks[0].Progress == "" || json.Unmarshal([]byte(tasks[0].Progress), &p) != nil || p.Total <= 0 {
		return 0, nil
	}
	f := float64(p.Done) / float64(p.Total) / 2
	if p.Phase == agentwire.PhaseVerifying {
		f += 0.5
	}
	return min(f, 1), nil
}

// WaitProgress waits until the mean progress of the named terminals reaches at least share.
func (d *Deploying) WaitProgress(ctx context.Context, names []string, share float64) error {
	for {
		sum := 0.0
		for _, n := range names {
			p, err := d.Progress(ctx, n)
			if err != nil {
				return err
			}
			sum += p
		}
		if sum/float64(len(names)) >= share {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("classroom: waiting for %.0f%% progress: %w", share*100, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DeployRun is how a deploy went.
type DeployRun struct {
	Result workflows.DeployImageResult
	Start  time.Time
	// Finished is when each terminal whose deploy ended well was done: its agent, having
	// verified the disk, reported and served its peers as long as they asked, exited.
	Finished map[string]time.Time
	// Last is the latest of Finished.
	Last time.Time
	// Egress is what the region's host sent into the lab during the deploy (bytes).
	Egress int64
	// ChunkBytes is what the region counted as chunk bytes sent to agents during the deploy
	// (tms_transfer_bytes_total{path="agent",direction="out"}).
	ChunkBytes int64
}

// Wait waits for the deploy's workflow and collects the figures.
func (d *Deploying) Wait(ctx context.Context) (DeployRun, error) {
	r := DeployRun{Start: d.Start, Finished: map[string]time.Time{}}
	err := d.run.Get(ctx, &r.Result)
	after, cerr := d.c.Lab.Counters(ctx, 0)
	if err == nil {
		err = cerr
	}
	r.Egress = after.TxBytes - d.before.TxBytes
	chunks, cerr := d.c.chunkBytesOut()
	if err == nil {
		err = cerr
	}
	r.ChunkBytes = chunks - d.chunks
	if err == nil {
		// The workflow ends when every agent reported; a member of a swarm then serves its
		// peers a little longer before it exits.
		err = d.c.waitOff(ctx, d.opts.Terminals)
	}
	d.c.mu.Lock()
	for _, o := range r.Result.Terminals {
		if !o.OK {
			continue
		}
		for _, e := range d.c.exits[o.Name] {
			if e.ok && e.at.After(d.Start) && e.at.After(r.Finished[o.Name]) {
				r.Finished[o.Name] = e.at
			}
		}
		if r.Finished[o.Name].After(r.Last) {
			r.Last = r.Finished[o.Name]
		}
	}
	d.c.mu.Unlock()
	return r, err
}

// chunkBytesOut reads the region's count of chunk bytes sent to agents.
func (c *Classroom) chunkBytesOut() (int64, error) {
	fams, err := c.Env.Regions[Region].Metrics.Registry().Gather()
	if err != nil {
		return 0, fmt.Errorf("classroom: the region's metrics: %w", err)
	}
	for _, f := range fams {
		if f.GetName() != "tms_transfer_bytes_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["path"] == metrics.PathAgent && labels["direction"] == metrics.Out {
				return int64(m.GetCounter().GetValue()), nil
			}
		}
	}
	return 0, errors.New("classroom: the region has no tms_transfer_bytes_total{path=agent,direction=out}")
}

// Durations are the terminals' completion times after the deploy's start, sorted.
func (r DeployRun) Durations() []time.Duration {
	var ds []time.Duration
	for _, t := range r.Finished {
		ds = append(ds, t.Sub(r.Start))
	}
	slices.Sort(ds)
	return ds
}

// Percentile is the p-th percentile (0…100) of sorted durations, nearest rank.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// CheckDisks checks that the named terminals' disks hold exactly the image.
func (c *Classroom) CheckDisks(img Image, names []string) error {
	var errs []error
	for _, n := range names {
		t, ok := c.Env.Terminal(n)
		if !ok {
			return fmt.Errorf("classroom: no terminal %s", n)
		}
		sum, err := FileSum(t.Disk)
		if err != nil {
			errs = append(errs, err)
		} else if sum != img.Sum {
			errs = append(errs, fmt.Errorf("terminal %s: disk differs from image %s (sha256 %x, want %x)", n, img.Name, sum[:8], img.Sum[:8]))
		}
	}
	return errors.Join(errs...)
}

// Bench is a benchmark's whole shape in a lab: in the child (this binary run again in the
// region's host) it runs measure once per iteration; in the parent it makes the lab that o
// (called only there) describes and runs benchmark name again inside it.
func Bench(b *testing.B, name string, o func() PrepareOptions, measure func(*testing.B, Spec)) {
	spec, child, err := ChildSpec()
	if err != nil {
		b.Fatal(err)
	}
	if child {
		for b.Loop() {
			measure(b, spec)
		}
		return
	}
	for b.Loop() {
		Parent(b, o(), "-test.run=^$", "-test.bench=^"+name+"$", "-test.benchtime=1x")
	}
}

// RateEnv is the port rate the environment variable env names (tc's units, as "16mbit"), def
// when it is unset.
func RateEnv(tb testing.TB, env, def string) int64 {
	s := os.Getenv(env)
	if s == "" {
		s = def
	}
	r, err := netlab.ParseRate(s)
	if err != nil {
		tb.Fatalf("%s: %v", env, err)
	}
	return r
}

// Parent is the parent's whole part for a benchmark or test: it skips tb unless it runs as
// root with ip, tc and go, builds tms-agent, creates and shapes the lab, runs this binary again
// in the region's host with args, and deletes the lab afterwards. On failure it prints the
// agents' logs. An empty o.Dir means a new temporary directory, removed afterwards unless
// $TMS_LAB_KEEP is set.
func Parent(tb testing.TB, o PrepareOptions, args ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create network namespaces")
	}
	for _, c := range []string{"ip", "tc", "go"} {
		if _, err := exec.LookPath(c); err != nil {
			tb.Skipf("needs %s (Debian: iproute2; go to build tms-agent): %v", c, err)
		}
	}
	if o.Dir == "" {
		// $TMS_BENCH_DIR, else the system's temporary directory; kept when $TMS_LAB_KEEP is
		// set (the agents' logs are in its */logs).
		dir, err := os.MkdirTemp(os.Getenv("TMS_BENCH_DIR"), "tms-classroom-")
		if err != nil {
			tb.Fatal(err)
		}
		o.Dir = dir
		defer func() {
			if os.Getenv("TMS_LAB_KEEP") != "" {
				tb.Logf("kept %s (TMS_LAB_KEEP)", dir)
				return
			}
			os.RemoveAll(dir)
		}()
	}
	ctx := context.Background()
	s, err := Prepare(ctx, o)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	}()
	if err := s.RunChild(ctx, args...); err != nil {
		logs, _ := filepath.Glob(filepath.Join(o.Dir, "*", "logs", "*.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				tb.Logf("%s:\n%s", l, b)
			}
		}
		tb.Fatalf("the classroom in lab %s failed: %v", s.Lab.Name, err)
	}
}
