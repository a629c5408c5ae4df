package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"tms/agentwire"
)

// errRebooted means the region moved on (the token belongs to an earlier boot, or the task
// ended): the agent boots again to learn what to do.
var errRebooted = errors.New("the region ended this boot's task")

// Run boots, does what the region says, and boots again, until ctx ends, a poweroff command
// comes, or (with Once) one boot's work is done.
func (a *Agent) Run(ctx context.Context) error {
	if a.Region == nil || a.MAC == "" {
		return errors.New("the agent needs its region's URL and the terminal's MAC")
	}
	c := &Client{Region: a.Region, HTTP: a.client(), MAC: a.MAC, Key: a.Key, FailoverAfter: a.FailoverAfter, Log: a.log()}
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
		token, bootenv := a.BootToken, a.BootEnv
		if a.NetBoot != nil {
			nb, err := a.NetBoot(ctx)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				// A PC whose in-memory OS does not start hangs until someone resets it.
				a.log().Error("the network boot failed: the terminal hangs", "err", err)
				<-ctx.Done()
				break
			}
			token, bootenv = nb.Token, nb.BootEnv
		}
		rep, err := c.Boot(ctx, agentwire.BootRequest{MAC: a.MAC, Disk: a.Disk, DiskSize: size, AgentVersion: Version, BootToken: token, BootEnv: bootenv})
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
		c.SetServers(rep.Servers)
		switch rep.Action {
		case agentwire.ActionCapture, agentwire.ActionDeploy, agentwire.ActionUpdate, agentwire.ActionProbe:
			c.Token = rep.Token
			err := a.runTask(ctx, c, rep, bootenv)
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
			idle := a.idle
			if a.Installed != nil {
				idle = func(ctx context.Context, _ *Client) (bool, error) { return a.Installed(ctx) }
			}
			off, err := idle(ctx, c)
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
func (a *Agent) runTask(ctx context.Context, c *Client, rep agentwire.BootReply, bootenv string) error {
	ti, err := c.Task(ctx)
	if err != nil {
		return taskErr(err)
	}
	c.SetServers(ti.Servers)
	if ti.Kind == agentwire.KindProbe {
		// A probe only says which in-memory OS this is; the terminal then boots its own disk.
		if _, err := c.Done(ctx, agentwire.Done{BootEnv: bootenv, AgentVersion: Version}); err != nil {
			return taskErr(err)
		}
		a.log().Info("probe answered", "task", ti.ID, "bootenv", bootenv, "agent", Version)
		return nil
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
	case agentwire.KindDeploy, agentwire.KindUpdate:
		write := a.deploy
		if ti.Kind == agentwire.KindUpdate {
			write = a.update
		}
		d, err := write(ctx, c, ti, pr)
		if pr.swarm != nil {
			defer pr.swarm.close()
		}
		if err != nil {
			return taskErr(causeOf(ctx, err))
		}
		stop()
		// The disk is written and verified; the region may keep the result waiting (425, the
		// boot's quiet time), and meanwhile the task shows this last report, not one from
		// before the end.
		pr.reportLast(ctx)
		if _, err := c.Done(context.WithoutCancel(ctx), d); err != nil {
			return taskErr(err)
		}
		if pr.swarm != nil {
			pr.swarm.linger(ctx)
		}
		a.log().Info(string(ti.Kind)+" written and verified", "task", ti.ID, "written", d.Written, "skipped", d.Skipped, "fetched_bytes", d.FetchedBytes)
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
	// swarm is the task's swarm membership, if it has one: it serves peers until the task's
	// end is reported (and a little longer, if the tracker asks).
	swarm *swarmSession
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

// verified marks a written disk read back and checked: all of the verifying phase done.
func (r *reporter) verified() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase = agentwire.PhaseVerifying
	r.done.Store(r.total)
}

// reportLast sends the progress as it stands once more, after the background reports have
// stopped, waiting at most lastReportWait: a report that does not go out is only logged.
func (r *reporter) reportLast(ctx context.Context) {
	if err := r.send(ctx, lastReportWait); err != nil {
		r.log.Debug("last progress report failed", "err", err)
	}
}

// send sends the progress as it stands, waiting at most wait.
func (r *reporter) send(ctx context.Context, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return r.c.Progress(ctx, r.snapshot())
}

// lastReportWait bounds the last progress report of a task.
const lastReportWait = 5 * time.Second

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
	// Stopping lets a report under way finish rather than cutting it: a report cut on its way
	// may still be written by the region after the last report (reportLast), and the task
	// would show the older progress.
	quit := make(chan struct{})
	var once sync.Once
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
			case <-quit:
				return
			case <-t.C:
			case <-r.kick:
			}
			err := r.send(ctx, reportWait)
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
		once.Do(func() { close(quit) })
		wg.Wait()
	}
}

// reportWait bounds one progress report: a region that does not answer delays the next
// report, and the end of the task, by no more.
const reportWait = 30 * time.Second
