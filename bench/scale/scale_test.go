package scale

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"golang.org/x/sync/errgroup"

	"tms/activities"
	"tms/devtemporal"
	"tms/internal/pgtest"
	"tms/signing"
	"tms/workers"
	"tms/workflows"
)

// BenchmarkScale runs, for each size in TMS_SCALE_SIZES (default 10,100,1000 regions), a
// pre-distribution plan of one image to every region and then a deploy to the 60 terminals of
// every region, and prints what Temporal and central carried (see the package doc). Its last
// lines, one per size, are "scale regions=N terminals=T max_events=… max_history_bytes=…
// activities_per_terminal=… seconds=…".
func BenchmarkScale(b *testing.B) {
	sizes, err := parseSizes(os.Getenv("TMS_SCALE_SIZES"))
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp(os.Getenv("TMS_BENCH_DIR"), "tms-bench-scale-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "tms")
	if out, err := exec.Command("go", "build", "-o", bin, "tms/cmd/tms").CombinedOutput(); err != nil {
		b.Fatalf("go build tms: %v\n%s", err, out)
	}
	// Temporal's state: in the SQLite file tms dev uses (the default), or in PostgreSQL
	// (TMS_SCALE_TEMPORAL=postgres: a local cluster as docs/deploy.md makes one, with Temporal's
	// schema as tms-temporal sql-tool makes it). On this 2-core machine SQLite cost less CPU per
	// terminal (docs/performance.md, "District scale").
	var eng engine
	switch os.Getenv("TMS_SCALE_TEMPORAL") {
	case "postgres":
		eng.pg = pgtest.Start(b)
	case "", "sqlite":
	default:
		b.Fatalf("TMS_SCALE_TEMPORAL: %q is neither postgres nor sqlite", os.Getenv("TMS_SCALE_TEMPORAL"))
	}
	// The simulated regions share this process, and so its cache of workflows the workers hold
	// (default 10,000): one region's server holds its own 60 terminals' and its deploy's, so
	// here it holds every region's, or a district deploying at once replays histories from the
	// start at every workflow task.
	worker.SetStickyWorkflowCacheSize(max(10000, slices.Max(sizes)*(TerminalsPerRegion+4)))
	var results []result
	var failed error
	for b.Loop() {
		results = results[:0]
		for _, n := range sizes {
			r, err := runSize(b, bin, eng, filepath.Join(dir, strconv.Itoa(n)), n)
			if err != nil {
				// The sizes measured keep their lines; the failure is said last.
				failed = fmt.Errorf("%d regions: %w", n, err)
				break
			}
			fmt.Println(r.detail())
			results = append(results, r)
		}
	}
	for i := 1; i < len(results); i++ {
		fmt.Println(growth(results[i-1], results[i]))
	}
	for _, r := range results {
		fmt.Println(r.line())
	}
	if failed != nil {
		b.Fatal(failed)
	}
}

func parseSizes(s string) ([]int, error) {
	if s == "" {
		s = "10,100,1000"
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > workflows.MaxPlanRegions {
			return nil, fmt.Errorf("TMS_SCALE_SIZES: %q is not a number of regions from 1 to %d", f, workflows.MaxPlanRegions)
		}
		out = append(out, n)
	}
	return out, nil
}

// result is what one size measured.
type result struct {
	regions, terminals int
	maxEvents          int64
	maxBytes           int64
	maxEventsWF        string
	maxBytesWF         string
	workflows          int64
	centralActs        int64 // activities central's worker ran (from the histories)
	regionActs         int64 // the simulated regions' activities, service reports excluded
	reports            int64 // the regions' status reports (Status activities)
	planSched          float64
	planSeconds        float64
	deploySched        float64
	deploySeconds      float64
	seconds            float64 // plan and deploys
	centralCPU         float64 // seconds
	benchCPU           float64 // the Temporal server and the simulated regions, seconds
	dbCPU              float64 // PostgreSQL's processes, seconds (0 on SQLite)
	engine             string  // where Temporal keeps its state: postgres or sqlite
	planEvents         int64
	planBytes          int64
	centralSvcEvents   int64
	centralSvcBytes    int64
	planOnly           bool // TMS_SCALE_DEPLOY=0: no deploys
	deployRegions      int  // how many regions deployed at once (TMS_SCALE_DEPLOY_REGIONS)
	reportInterval     time.Duration
}

func (r result) actsPerTerminal() float64 {
	return float64(r.centralActs+r.regionActs) / float64(r.terminals)
}

func (r result) line() string {
	name := "scale"
	if r.planOnly {
		name = "scale-plan-only"
	}
	return fmt.Sprintf(name+" regions=%d terminals=%d max_events=%d max_history_bytes=%d activities_per_terminal=%.2f seconds=%.2f",
		r.regions, r.terminals, r.maxEvents, r.maxBytes, r.actsPerTerminal(), r.seconds)
}

func (r result) detail() string {
	return fmt.Sprintf("scale-detail regions=%d temporal_db=%s workflows=%d workflows_per_terminal=%.2f central_activities=%d region_activities=%d "+
		"activities_per_terminal=%.2f central_rate=%.1f/s central_cpu=%.2fs central_cores=%.2f server_and_sim_cpu=%.2fs db_cpu=%.2fs "+
		"report_interval=%s plan_schedule=%.2fs plan=%.2fs deploy_regions_at_once=%d deploy_schedule=%.2fs deploy=%.2fs status_reports=%d "+
		"max_events=%d (%s) max_history_bytes=%d (%s) plan_events=%d plan_bytes=%d central_service_events=%d central_service_bytes=%d",
		r.regions, r.engine, r.workflows, float64(r.workflows)/float64(r.terminals), r.centralActs, r.regionActs,
		r.actsPerTerminal(), float64(r.centralActs)/r.seconds, r.centralCPU, r.centralCPU/r.seconds, r.benchCPU, r.dbCPU,
		r.reportInterval, r.planSched, r.planSeconds, r.deployRegions, r.deploySched, r.deploySeconds, r.reports,
		r.maxEvents, r.maxEventsWF, r.maxBytes, r.maxBytesWF, r.planEvents, r.planBytes, r.centralSvcEvents, r.centralSvcBytes)
}

func growth(a, b result) string {
	ratio := func(x, y float64) float64 {
		if x == 0 {
			return 0
		}
		return y / x
	}
	return fmt.Sprintf("scale-growth regions %d->%d (x%.0f): seconds x%.2f, max_events x%.2f, max_history_bytes x%.2f, plan_events x%.2f, "+
		"activities_per_terminal x%.2f, central_cpu x%.2f, deploy_schedule x%.2f",
		a.regions, b.regions, ratio(float64(a.regions), float64(b.regions)), ratio(a.seconds, b.seconds),
		ratio(float64(a.maxEvents), float64(b.maxEvents)), ratio(float64(a.maxBytes), float64(b.maxBytes)),
		ratio(float64(a.planEvents), float64(b.planEvents)), ratio(a.actsPerTerminal(), b.actsPerTerminal()),
		ratio(a.centralCPU, b.centralCPU), ratio(a.deploySched, b.deploySched))
}

// serverLimits are the Temporal server's settings for n regions, as an admin sizes a district's
// cluster (docs/deploy.md): every region polls its own task queue (1,000 regions' workers hold
// 2,000 workflow-task polls open, above the 1,200 long polls one frontend takes of one API by
// default), a region's queue is busy a few times an hour (one partition, not four, so a poll
// waits where the task lands), and every open workflow of the district deploying at once stays
// in the history cache (the server's own default size, which tms dev lowers for a small machine).
func serverLimits(n int) map[string]any {
	return map[string]any{
		"frontend.namespaceCount":              4*n + 1000,
		"frontend.namespaceRPS":                max(2400, 20*n),
		"frontend.rps":                         max(2400, 20*n),
		"matching.rps":                         max(1200, 20*n),
		"matching.numTaskqueueReadPartitions":  1,
		"matching.numTaskqueueWritePartitions": 1,
		"history.hostLevelCacheMaxSize":        128000,
	}
}

// engine is where the Temporal server keeps its state: PostgreSQL (pg), or SQLite (pg nil).
type engine struct {
	pg *pgtest.Cluster
}

func (e engine) name() string {
	if e.pg == nil {
		return "sqlite"
	}
	return "postgres"
}

// databases creates size n's two databases with Temporal's schema.
func (e engine) databases(n int) (*devtemporal.Postgres, error) {
	p := &devtemporal.Postgres{Addr: net.JoinHostPort(e.pg.Addr, strconv.Itoa(e.pg.Port)), User: "postgres",
		Database: fmt.Sprintf("temporal_%d", n), VisibilityDatabase: fmt.Sprintf("temporal_visibility_%d", n),
		// Shards as docs/deploy.md sizes a one-machine cluster; connections for 2 cores.
		Shards: 4, MaxConns: 20}
	return p, p.CreateDatabases()
}

// cpu is the CPU seconds of PostgreSQL's processes so far: the server's, its live connections'
// and those that ended; 0 on SQLite.
func (e engine) cpu() float64 {
	if e.pg == nil {
		return 0
	}
	pid := strconv.Itoa(e.pg.PID())
	total := procCPU(pid) + procChildCPU(pid)
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		if procPPID(d.Name()) == pid {
			total += procCPU(d.Name())
		}
	}
	return total
}

// runSize runs one size: its own Temporal server, central process and n simulated regions.
func runSize(b *testing.B, bin string, eng engine, dir string, n int) (res result, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Hour)
	defer cancel()
	res.regions, res.terminals = n, n*TerminalsPerRegion
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	// The embedded server's SQLite file in WAL mode without an fsync per commit, one
	// connection (TMS_SCALE_SQLITE=default: as tms dev runs it; memory: in memory; more
	// connections made Temporal's writes fail with "database is locked"):
	// docs/performance.md, "District scale", says what each cost.
	to := devtemporal.Options{DataDir: filepath.Join(dir, "temporal"), Log: log,
		SQLitePragmas: map[string]string{"journal_mode": "wal", "synchronous": "off", "busy_timeout": "10000"},
		DynamicConfig: serverLimits(n)}
	switch os.Getenv("TMS_SCALE_SQLITE") {
	case "default":
		to.SQLitePragmas = nil
	case "memory":
		to.DataDir = ""
	}
	res.engine = eng.name()
	if eng.pg != nil {
		if to.Postgres, err = eng.databases(n); err != nil {
			return res, err
		}
	}
	srv, err := devtemporal.Start(to)
	if err != nil {
		return res, err
	}
	defer srv.Stop()
	c, err := client.Dial(client.Options{HostPort: srv.Address(), Namespace: "default", Logger: sdklog.NewStructuredLogger(log)})
	if err != nil {
		return res, err
	}
	defer c.Close()

	central, err := startCentral(ctx, bin, dir, srv.Address())
	if err != nil {
		return res, err
	}
	defer central.stop()
	if err := waitRunning(ctx, c, workflows.CentralServiceID, 3*time.Minute); err != nil {
		return res, fmt.Errorf("central's service workflow: %w (central's log: %s)", err, central.logTail())
	}

	// The regions: a source holding the image, and n simulated regions.
	var count Counters
	version := randomVersion()
	src := NewSimRegion("src", &count, version)
	sims := make([]*SimRegion, n)
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("r%04d", i+1)
		sims[i] = NewSimRegion(ids[i], &count)
	}
	all := append([]*SimRegion{src}, sims...)
	var ws []worker.Worker
	defer func() {
		for _, w := range ws {
			w.Stop()
		}
	}()
	// How often each region reports its status to central (default 15 s, the regions' own
	// default): TMS_SCALE_REPORT_INTERVAL=5m spares a loaded server 1,000 regions' reports.
	interval := workflows.DefaultReportInterval
	if v := os.Getenv("TMS_SCALE_REPORT_INTERVAL"); v != "" {
		if interval, err = time.ParseDuration(v); err != nil || interval < time.Second {
			return res, fmt.Errorf("TMS_SCALE_REPORT_INTERVAL: %q is not a duration of a second or more", v)
		}
	}
	res.reportInterval = interval
	for _, s := range all {
		s.ReportInterval = interval
		// A worker that could not start its service workflow in a minute (the server busy with
		// the regions started before it) is made again, as systemd restarts a region's server.
		var err error
		for try := 0; try < 3; try++ {
			w := workers.NewRegionWith(c, workers.RegionWorker{ID: s.ID, Activities: s, ReportInterval: interval, Options: worker.Options{
				// 1,000 workers in one process: few pollers each, or the server drowns in long polls.
				MaxConcurrentWorkflowTaskPollers: 2, MaxConcurrentActivityTaskPollers: 1,
			}})
			if err = w.Start(); err == nil {
				ws = append(ws, w)
				break
			}
		}
		if err != nil {
			return res, fmt.Errorf("region %s's worker: %w", s.ID, err)
		}
	}
	if err := parallel(ctx, all, 32, func(ctx context.Context, s *SimRegion) error { return register(ctx, c, s.ID) }); err != nil {
		return res, err
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "register/exam", TaskQueue: activities.CentralQueue},
		workflows.RegisterVersion, activities.RegisterVersionInput{Tag: "latest", Region: src.ID, Info: activities.VersionInfo{
			Version: version, Name: "exam", Created: time.Now(), DiskSize: 32 << 30, ChunkSize: 4 << 20, StoredBytes: src.StoredBytes}})
	if err != nil {
		return res, err
	}
	if err := run.Get(ctx, nil); err != nil {
		return res, fmt.Errorf("registering the image: %w", err)
	}

	cpu0, benchCPU0, pgCPU0 := central.cpu(), selfCPU(), eng.cpu()
	start := time.Now()
	// The pre-distribution plan, started as tms plan create starts it.
	in := workflows.PlanInput{Name: "district", Image: "exam", Regions: ids, By: time.Now().Add(time.Hour)}
	tags := workflows.TaskTags{Kind: workflows.TaskPlan, Image: in.Image}
	if _, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.PlanWorkflowID(in.Name), TaskQueue: activities.CentralQueue,
		TypedSearchAttributes: tags.StartAttributes(), WorkflowExecutionErrorWhenAlreadyStarted: true}, workflows.PlanImage, in); err != nil {
		return res, fmt.Errorf("starting the plan: %w", err)
	}
	if err := waitFor(ctx, 90*time.Minute, func() (bool, error) {
		v, err := c.QueryWorkflow(ctx, workflows.PlanWorkflowID(in.Name), "", workflows.QueryProgress)
		if err != nil {
			return false, err
		}
		var st workflows.PlanStatus
		if err := v.Get(&st); err != nil {
			return false, err
		}
		return len(st.Regions) == n && len(st.NotReady()) == 0, nil
	}); err != nil {
		return res, fmt.Errorf("the plan: %w", err)
	}
	for _, s := range sims {
		if !Holds(s, version) {
			return res, fmt.Errorf("the plan says region %s is ready; it does not hold the version", s.ID)
		}
	}
	res.planSeconds = time.Since(start).Seconds()
	res.planSched = firstAfter(sims, start, func(s *SimRegion) int64 { return s.FirstPlan.Load() })

	if os.Getenv("TMS_SCALE_DEPLOY") == "0" {
		// The plan only: its line says so (scale-plan-only), and the deploy's figures are 0.
		res.planOnly = true
		res.seconds = time.Since(start).Seconds()
		res.centralCPU, res.benchCPU, res.dbCPU = central.cpu()-cpu0, selfCPU()-benchCPU0, eng.cpu()-pgCPU0
		return res, finish(ctx, c, &count, &res)
	}
	// A deploy in every region, started as tms deploy starts it: all at once, or with
	// TMS_SCALE_DEPLOY_REGIONS=K at most K regions deploying at a time (as an admin staggers a
	// district's deploys), the next region starting when one ends.
	at := n
	if v := os.Getenv("TMS_SCALE_DEPLOY_REGIONS"); v != "" {
		if at, err = strconv.Atoi(v); err != nil || at < 1 {
			return res, fmt.Errorf("TMS_SCALE_DEPLOY_REGIONS: %q is not a number of regions", v)
		}
	}
	res.deployRegions = min(at, n)
	deployStart := time.Now()
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	if err := parallel(ctx, idx, at, func(ctx context.Context, i int) error {
		region := ids[i]
		id := workflows.Stamped(workflows.DeployWorkflowID(region, "lab", nil, "exam"), time.Now())
		tags := workflows.TaskTags{Region: region, Kind: workflows.TaskDeploy, Group: "lab", Image: "exam"}
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: activities.RegionQueue(region),
			TypedSearchAttributes: tags.StartAttributes(), WorkflowExecutionErrorWhenAlreadyStarted: true},
			workflows.DeployImage, workflows.DeployImageInput{Region: region, Group: "lab", Image: "exam"})
		if err != nil {
			return fmt.Errorf("starting the deploy in %s: %w", region, err)
		}
		var out workflows.DeployImageResult
		if err := run.Get(ctx, &out); err != nil {
			return fmt.Errorf("deploy in %s: %w", region, err)
		}
		if out.Failed != 0 || len(out.Terminals) != TerminalsPerRegion {
			return fmt.Errorf("deploy in %s: %d of %d terminals failed", region, out.Failed, len(out.Terminals))
		}
		return nil
	}); err != nil {
		return res, err
	}
	res.deploySeconds = time.Since(deployStart).Seconds()
	res.deploySched = firstAfter(sims, deployStart, func(s *SimRegion) int64 { return s.FirstDeploy.Load() })
	res.seconds = time.Since(start).Seconds()
	res.centralCPU, res.benchCPU, res.dbCPU = central.cpu()-cpu0, selfCPU()-benchCPU0, eng.cpu()-pgCPU0

	return res, finish(ctx, c, &count, &res)
}

// finish takes the counts of the regions' activities and reads Temporal's histories.
func finish(ctx context.Context, c client.Client, count *Counters, res *result) error {
	counts := count.Snapshot()
	for name, k := range counts {
		switch name {
		case "Status", "EvictIfFull", "Admin":
			if name == "Status" {
				res.reports = k
			}
		default:
			res.regionActs += k
		}
	}
	return histories(ctx, c, res)
}

// firstAfter is the seconds from start until the last region's first activity of a kind.
func firstAfter(sims []*SimRegion, start time.Time, at func(*SimRegion) int64) float64 {
	var last int64
	for _, s := range sims {
		last = max(last, at(s))
	}
	if last == 0 {
		return 0
	}
	return time.Unix(0, last).Sub(start).Seconds()
}

// histories reads, from Temporal, how many workflows ran, the largest histories, and the
// activities central's worker ran (every activity scheduled on the central queue).
func histories(ctx context.Context, c client.Client, res *result) error {
	cnt, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{})
	if err != nil {
		return err
	}
	res.workflows = cnt.GetCount()
	var token []byte
	type wf struct{ id, run, typ string }
	var scan []wf
	for {
		page, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{PageSize: 1000, NextPageToken: token})
		if err != nil {
			return err
		}
		for _, e := range page.GetExecutions() {
			typ := e.GetType().GetName()
			id, run := e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()
			events, bytes := e.GetHistoryLength(), e.GetHistorySizeBytes()
			if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				d, err := c.DescribeWorkflowExecution(ctx, id, run)
				if err != nil {
					return err
				}
				events, bytes = d.GetWorkflowExecutionInfo().GetHistoryLength(), d.GetWorkflowExecutionInfo().GetHistorySizeBytes()
			}
			if events > res.maxEvents {
				res.maxEvents, res.maxEventsWF = events, id
			}
			if bytes > res.maxBytes {
				res.maxBytes, res.maxBytesWF = bytes, id
			}
			switch {
			case id == workflows.PlanWorkflowID("district"):
				res.planEvents, res.planBytes = max(res.planEvents, events), max(res.planBytes, bytes)
			case id == workflows.CentralServiceID:
				res.centralSvcEvents, res.centralSvcBytes = max(res.centralSvcEvents, events), max(res.centralSvcBytes, bytes)
			}
			// Terminal workflows run region activities only; every other may run central's.
			if typ != "DeployTerminal" {
				scan = append(scan, wf{id, run, typ})
			}
		}
		if token = page.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	var mu sync.Mutex
	return parallel(ctx, scan, 16, func(ctx context.Context, w wf) error {
		it := c.GetWorkflowHistory(ctx, w.id, w.run, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		var k int64
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				return fmt.Errorf("history of %s: %w", w.id, err)
			}
			if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetTaskQueue().GetName() == activities.CentralQueue {
				k++
			}
		}
		mu.Lock()
		res.centralActs += k
		mu.Unlock()
		return nil
	})
}

// register registers region id as its server does when it starts (server.register), trying
// again for up to 10 minutes: a thousand regions starting at once may find the server busy.
func register(ctx context.Context, c client.Client, id string) error {
	var err error
	for try, deadline := 0, time.Now().Add(10*time.Minute); ; try++ {
		var run client.WorkflowRun
		run, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "region/" + id + "/register", TaskQueue: activities.CentralQueue,
			WorkflowExecutionTimeout: 2 * time.Minute}, workflows.RegisterRegion, activities.RegionInfo{
			ID: id, Labels: map[string]string{"site": "district"}, Capacity: 2 << 40,
			// Never dialed: the simulated pulls move no bytes.
			Endpoint: "http://127.0.0.1:9/", LastSeen: time.Now(), Timezone: "UTC"})
		if err == nil {
			if err = run.Get(ctx, nil); err == nil {
				return nil
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("registering region %s (%d tries): %w", id, try+1, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(min(try+1, 10)) * time.Second):
		}
	}
}

func parallel[T any](ctx context.Context, items []T, limit int, f func(context.Context, T) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, it := range items {
		g.Go(func() error { return f(ctx, it) })
	}
	return g.Wait()
}

func waitFor(ctx context.Context, limit time.Duration, done func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		ok, err := done()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(time.Second):
		}
	}
}

func waitRunning(ctx context.Context, c client.Client, id string, limit time.Duration) error {
	return waitFor(ctx, limit, func() (bool, error) {
		d, err := c.DescribeWorkflowExecution(ctx, id, "")
		if err != nil {
			return false, err
		}
		return d.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
	})
}

func randomVersion() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// centralProc is tms central running as a process of its own, so its CPU is its own.
type centralProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startCentral(ctx context.Context, bin, dir, temporal string) (*centralProc, error) {
	key := filepath.Join(dir, "central.key")
	if _, err := signing.LoadOrCreateKeyFile(key); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &centralProc{log: filepath.Join(dir, "central.log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "central", "--central-temporal-address", temporal, "--central-temporal-insecure",
		"--central-store", filepath.Join(dir, "relay"), "--central-data-dir", filepath.Join(dir, "central"),
		"--central-signing-key-file", key, "--central-listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *centralProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *centralProc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// cpu is the process's user and system CPU seconds so far.
func (p *centralProc) cpu() float64 { return procCPU(strconv.Itoa(p.cmd.Process.Pid)) }

func selfCPU() float64 { return procCPU("self") }

// procCPU reads utime and stime from /proc/PID/stat (clock ticks of 1/100 s on Linux).
func procCPU(pid string) float64 { return statSeconds(pid, 11, 12) }

// procChildCPU reads cutime and cstime: the CPU of PID's children that ended.
func procChildCPU(pid string) float64 { return statSeconds(pid, 13, 14) }

// procPPID is the parent of process pid.
func procPPID(pid string) string {
	fs := statFields(pid)
	if len(fs) < 2 {
		return ""
	}
	return fs[1]
}

func statSeconds(pid string, a, b int) float64 {
	fs := statFields(pid)
	if len(fs) <= b {
		return 0
	}
	x, _ := strconv.ParseFloat(fs[a], 64)
	y, _ := strconv.ParseFloat(fs[b], 64)
	return (x + y) / 100
}

// statFields are the fields of /proc/PID/stat after the command name (the state first).
func statFields(pid string) []string {
	f, err := os.Open("/proc/" + pid + "/stat")
	if err != nil {
		return nil
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	// The command name is in parentheses and may hold spaces.
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(line[i+1:])
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
