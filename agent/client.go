package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"tms/agentwire"
	"tms/manifest"
	"tms/store"
	"tms/transfer"
)

// APIError is an error answer of the region's agent API.
type APIError struct {
	Status int
	Msg    string
	Retry  bool
}

func (e *APIError) Error() string { return fmt.Sprintf("region: %s (%d)", e.Msg, e.Status) }

// Permanent reports whether asking again cannot help: the region refused the request itself.
func Permanent(err error) bool {
	var e *APIError
	if errors.As(err, &e) {
		return !e.Retry && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests && e.Status != http.StatusRequestTimeout
	}
	var pe *permanentError
	return errors.As(err, &pe)
}

// permanentError is a failure on the terminal's side that retrying will not mend (a disk too
// small for the image, a disk that cannot be read).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

// Client speaks to a region's agent API.
type Client struct {
	Region *url.URL
	HTTP   *http.Client
	MAC    string
	// Token is the current boot's task token; empty outside a task.
	Token string
	// Key is the terminal's agent key, which signs the requests made outside a task (boot,
	// command poll); nil for an agent that has none (the in-memory OS, which has its boot's
	// token instead).
	Key []byte
	// Settle is how long to wait before offering a result again when the region is not ready
	// to take it yet (default 5 s).
	Settle time.Duration
	// Idle is how long an answer streaming chunk frames may stop moving before it is cut
	// (default DefaultIdle).
	Idle time.Duration
	// Patience is how long frames not yet in the region are asked for again: while a share
	// still brings the version, the region answers 503 for a chunk that did not arrive within
	// its wait (default DefaultPatience).
	Patience time.Duration
	// FailoverAfter is how long the server the agent talks to may fail every request before
	// the agent turns to the region's next server (default DefaultFailoverAfter; failover.go).
	FailoverAfter time.Duration
	Log           *slog.Logger

	fo failover
}

// DefaultPatience is how long an agent keeps asking for chunks its region says are still
// arriving. The region fails the request itself (424) once the share that brings them fails.
const DefaultPatience = 30 * time.Minute

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// requestTo sends a request to server base.
func (c *Client) requestTo(ctx context.Context, base *url.URL, method, path, ctype string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	p, query, _ := strings.Cut(path, "?")
	u := base.JoinPath(p)
	u.RawQuery = query
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	switch {
	case c.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set(agentwire.TerminalHeader, c.MAC)
	case c.Key != nil:
		agentwire.SignRequest(req, c.MAC, c.Key, body, time.Now())
	}
	resp, err := c.http().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: base.String(), What: method + " " + path, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e agentwire.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if e.Error == "" {
				e.Error = resp.Status
			}
		}
		return nil, &APIError{Status: resp.StatusCode, Msg: e.Error, Retry: e.Retry || resp.StatusCode >= 500}
	}
	return resp, nil
}

// do sends a request and decodes a JSON answer into out (unless out is nil or a *[]byte, which
// gets the raw body, at most limit bytes).
// A server that cannot be reached, fails, or cuts its answer short is asked again, and after
// FailoverAfter the region's next server (failover.go).
func (c *Client) do(ctx context.Context, method, path, ctype string, body []byte, out any, limit int64) error {
	for {
		base := c.base()
		err := c.doTo(ctx, base, method, path, ctype, body, out, limit)
		if err == nil || !unreachable(err) {
			c.answered(base)
			return err
		}
		if ctx.Err() != nil || !c.failed(base, err) {
			return err
		}
		if err := pause(ctx); err != nil {
			return err
		}
	}
}

func (c *Client) doTo(ctx context.Context, base *url.URL, method, path, ctype string, body []byte, out any, limit int64) error {
	resp, err := c.requestTo(ctx, base, method, path, ctype, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if limit <= 0 {
		limit = 1 << 20
	}
	var b []byte
	if n := resp.ContentLength; n >= 0 && n <= limit {
		// Chunk frames come with their length: read into a buffer of that size at once
		// instead of growing one (a deploy reads thousands).
		b = make([]byte, n)
		_, err = io.ReadFull(resp.Body, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &store.Error{Kind: store.ErrUnavailable, Store: base.String(), What: method + " " + path, Err: err}
	}
	if int64(len(b)) > limit {
		return &store.Error{Kind: store.ErrCorrupt, Store: base.String(), What: method + " " + path, Err: fmt.Errorf("answer over %d bytes", limit)}
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return &store.Error{Kind: store.ErrUnavailable, Store: base.String(), What: method + " " + path,
			Err: fmt.Errorf("answer cut short: %d of %d bytes", len(b), resp.ContentLength)}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = b
		return nil
	default:
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("region's answer to %s %s: %w", method, path, err)
		}
		return nil
	}
}

func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, "application/json", b, out, 0)
}

// Boot reports that the terminal started and returns its boot action.
func (c *Client) Boot(ctx context.Context, req agentwire.BootRequest) (agentwire.BootReply, error) {
	var rep agentwire.BootReply
	err := c.postJSON(ctx, "/v1/agent/boot", req, &rep)
	return rep, err
}

// Task describes the task the token opens.
func (c *Client) Task(ctx context.Context) (agentwire.TaskInfo, error) {
	var ti agentwire.TaskInfo
	err := c.do(ctx, http.MethodGet, "/v1/agent/task", "", nil, &ti, 0)
	return ti, err
}

// GetManifestBytes reads the deployed version's manifest (transfer.Source).
func (c *Client) GetManifestBytes(ctx context.Context, id manifest.ID) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, "/v1/agent/task/manifest", "", nil, &b, manifest.MaxEncodedSize)
	return b, err
}

// GetBaseManifestBytes reads the manifest of the version an update's disk holds.
func (c *Client) GetBaseManifestBytes(ctx context.Context) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, "/v1/agent/task/base", "", nil, &b, manifest.MaxEncodedSize)
	return b, err
}

// GetChunkFrame reads one compressed chunk of the deployed version (transfer.Source).
func (c *Client) GetChunkFrame(ctx context.Context, id manifest.ID) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, "/v1/agent/task/chunks/"+id.String(), "", nil, &b, agentwire.MaxFrame)
	return b, err
}

// GetChunkFrames reads the stored frames of ids (1 to agentwire.MaxFramesQuery chunks of the
// deployed version) in one request, and calls fn with each as it arrives, in the order of ids,
// read into a slice from buf (transfer.BatchSource). The answer is checked as it is read
// (agentwire.ReadFrames: only the ids asked for, in order, within the limits, all of them);
// the frames are not: the caller checks each against its id. An answer that stops moving
// for Idle is cut, and the error wraps ErrStalled.
//
// A 503 the region answers before any frame (the chunks are still arriving in the region) is
// asked again after a pause, for up to Patience. An answer that fails or is cut short is
// asked again for the frames that did not come, of the region's next server once this one has
// failed for FailoverAfter (failover.go).
func (c *Client) GetChunkFrames(ctx context.Context, ids []manifest.ID, buf func(size int) []byte, fn func(i int, frame []byte) error) error {
	patience := c.Patience
	if patience <= 0 {
		patience = DefaultPatience
	}
	if len(ids) == 0 || len(ids) > agentwire.MaxFramesQuery {
		return fmt.Errorf("%d chunks in one frames request; want 1 to %d", len(ids), agentwire.MaxFramesQuery)
	}
	giveUp := time.Now().Add(patience)
	got := 0 // frames handed to fn
	for {
		base := c.base()
		off := got
		var fnErr error
		err := c.getChunkFrames(ctx, base, ids[off:], buf, func(i int, frame []byte) error {
			if fnErr = fn(off+i, frame); fnErr != nil {
				return fnErr
			}
			got = off + i + 1
			return nil
		})
		if err == nil || fnErr != nil || got == len(ids) {
			// Every frame came (an answer cut after its last frame lost nothing).
			c.answered(base)
			if fnErr != nil {
				return err
			}
			return nil
		}
		var api *APIError
		if errors.As(err, &api) && api.Status == http.StatusServiceUnavailable && api.Retry {
			c.answered(base)
			if time.Now().After(giveUp) {
				return err
			}
			t := time.NewTimer(200 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		if got > off {
			c.answered(base) // it served some: count its failures afresh
		}
		if !unreachable(err) || ctx.Err() != nil || !c.failed(base, err) {
			return err
		}
		if err := pause(ctx); err != nil {
			return err
		}
	}
}

func (c *Client) getChunkFrames(ctx context.Context, base *url.URL, ids []manifest.ID, buf func(size int) []byte, fn func(i int, frame []byte) error) error {
	if len(ids) == 0 || len(ids) > agentwire.MaxFramesQuery {
		return fmt.Errorf("%d chunks in one frames request; want 1 to %d", len(ids), agentwire.MaxFramesQuery)
	}
	body, err := json.Marshal(agentwire.FramesRequest{Chunks: ids})
	if err != nil {
		return err
	}
	idle := c.Idle
	if idle <= 0 {
		idle = DefaultIdle
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stalled := fmt.Errorf("%w: nothing of the answer came for %s", ErrStalled, idle)
	timer := time.AfterFunc(idle, func() { cancel(stalled) })
	defer timer.Stop()
	const path = "/v1/agent/task/frames"
	fail := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if context.Cause(rctx) == stalled {
			err = stalled
		}
		return &store.Error{Kind: store.ErrUnavailable, Store: base.String(), What: "POST " + path, Err: err}
	}
	resp, err := c.requestTo(rctx, base, http.MethodPost, path, "application/json", body)
	if err != nil {
		var api *APIError
		if errors.As(err, &api) {
			return err
		}
		return fail(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != agentwire.FramesType {
		return &store.Error{Kind: store.ErrCorrupt, Store: base.String(), What: "POST " + path,
			Err: fmt.Errorf("%w: the answer is %q, not %s", agentwire.ErrFrames, ct, agentwire.FramesType)}
	}
	if err := agentwire.ReadFrames(&idleReader{r: resp.Body, t: timer, idle: idle}, ids, buf, fn); err != nil {
		return fail(err)
	}
	return nil
}

// DefaultIdle is how long an answer streaming chunk frames may stop moving before the agent
// cuts it.
const DefaultIdle = 30 * time.Second

// ErrStalled marks an answer of the region that stopped moving.
var ErrStalled = errors.New("the region's answer stalled")

// idleReader pushes back its timer's deadline each time bytes arrive.
type idleReader struct {
	r    io.Reader
	t    *time.Timer
	idle time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.idle)
	}
	return n, err
}

func (c *Client) String() string { return c.base().String() }

var (
	_ transfer.Source      = (*Client)(nil)
	_ transfer.BatchSource = (*Client)(nil)
)

// Missing returns which of ids the region lacks.
func (c *Client) Missing(ctx context.Context, ids []manifest.ID) ([]manifest.ID, error) {
	var rep agentwire.MissingReply
	err := c.postJSON(ctx, "/v1/agent/task/missing", agentwire.MissingRequest{Chunks: ids}, &rep)
	return rep.Missing, err
}

// Upload sends a chunk batch (see AppendBatch).
func (c *Client) Upload(ctx context.Context, batch []byte) error {
	return c.do(ctx, http.MethodPost, "/v1/agent/task/chunks", "application/octet-stream", batch, nil, 0)
}

// Publish sends a capture's manifest; the region publishes it as the image's new version.
func (c *Client) Publish(ctx context.Context, encoded []byte) (agentwire.Result, error) {
	var res agentwire.Result
	err := c.settled(ctx, func() error {
		return c.do(ctx, http.MethodPut, "/v1/agent/task/manifest", "application/json", encoded, &res, 0)
	})
	return res, err
}

// settled calls f until the region stops answering 425 Too Early: a region that booted the
// terminal from the network takes a task's result only once the boot's claim has stood long
// enough for a rival claimant to show itself.
func (c *Client) settled(ctx context.Context, f func() error) error {
	wait := c.Settle
	if wait <= 0 {
		wait = 5 * time.Second
	}
	for {
		err := f()
		var e *APIError
		if !errors.As(err, &e) || e.Status != http.StatusTooEarly {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Swarm calls the region's swarm tracker.
func (c *Client) Swarm(ctx context.Context, req agentwire.SwarmRequest) (agentwire.SwarmReply, error) {
	var rep agentwire.SwarmReply
	err := c.postJSON(ctx, "/v1/agent/task/swarm", req, &rep)
	return rep, err
}

// Progress reports how far the task is.
func (c *Client) Progress(ctx context.Context, p agentwire.Progress) error {
	return c.postJSON(ctx, "/v1/agent/task/progress", p, nil)
}

// Done reports the task's end.
func (c *Client) Done(ctx context.Context, d agentwire.Done) (agentwire.Result, error) {
	var res agentwire.Result
	err := c.settled(ctx, func() error { return c.postJSON(ctx, "/v1/agent/task/done", d, &res) })
	return res, err
}

// Command waits up to wait for a command for the terminal.
func (c *Client) Command(ctx context.Context, wait string) (agentwire.Command, error) {
	var cmd agentwire.CommandReply
	q := url.Values{"mac": {c.MAC}, "wait": {wait}}
	err := c.do(ctx, http.MethodGet, "/v1/agent/commands?"+q.Encode(), "", nil, &cmd, 0)
	return cmd.Command, err
}

// Hello tells the region the installed OS's agent service started (key-signed) and returns the
// version the region recorded for the disk, with the samples to check it by.
func (c *Client) Hello(ctx context.Context, req agentwire.HelloRequest) (agentwire.HelloReply, error) {
	var rep agentwire.HelloReply
	if err := c.postJSON(ctx, "/v1/agent/hello", req, &rep); err != nil {
		return rep, err
	}
	return rep, rep.Validate()
}

// CheckDisk reports what the disk holds against a hello's samples (key-signed).
func (c *Client) CheckDisk(ctx context.Context, check agentwire.DiskCheck) error {
	return c.postJSON(ctx, "/v1/agent/hello/check", check, nil)
}
