package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"tms/agentwire"
	"tms/internal/ctxtime"
	"tms/store"
)

// A region may have several servers sharing one database, so a terminal's task token is good
// at each. The region's answers name its other servers (agentwire.BootReply.Servers,
// TaskInfo.Servers); when the server the agent talks to stops answering — connection errors,
// answers cut short, or 5xx — for FailoverAfter, the agent carries on with the next one,
// the same task, the same token, and what it already wrote stays written. With no other
// server named, errors go up at once, as they always have: the task starts over with a new
// boot.

// DefaultFailoverAfter is how long a server may fail every request before the agent turns to
// the region's next server.
const DefaultFailoverAfter = 5 * time.Second

// failover is a client's list of the region's servers and which one it talks to.
type failover struct {
	mu   sync.Mutex
	list []*url.URL // the servers, the current one among them
	cur  int
	// since is when the current server began failing every request (zero: it answers);
	// streak is when the run of failures began, across servers.
	since, streak time.Time
}

// base is the server requests go to now.
func (c *Client) base() *url.URL {
	c.fo.mu.Lock()
	defer c.fo.mu.Unlock()
	if len(c.fo.list) == 0 {
		return c.Region
	}
	return c.fo.list[c.fo.cur]
}

// Server is the endpoint the client talks to now: Region, or the server it turned to.
func (c *Client) Server() *url.URL { return c.base() }

// SetServers takes the region's other servers from an answer of the region: the list becomes
// the current server followed by them. An answer naming none leaves the list as it is (a
// region of one server, or one that could not list them); one naming servers the agent cannot
// trust (agentwire.ParseServers) is ignored whole, with a warning.
func (c *Client) SetServers(servers []string) {
	if len(servers) == 0 {
		return
	}
	us, err := agentwire.ParseServers(servers)
	if err != nil {
		c.logger().Warn("the region named servers this agent will not use", "err", err)
		return
	}
	cur := c.base()
	list := []*url.URL{cur}
	seen := map[string]bool{cur.String(): true}
	for _, u := range us {
		if !seen[u.String()] {
			seen[u.String()] = true
			list = append(list, u)
		}
	}
	c.fo.mu.Lock()
	c.fo.list, c.fo.cur = list, 0
	c.fo.mu.Unlock()
}

func (c *Client) failoverAfter() time.Duration {
	if c.FailoverAfter > 0 {
		return c.FailoverAfter
	}
	return DefaultFailoverAfter
}

func (c *Client) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.DiscardHandler)
}

// unreachable reports whether err says the server, not the request, is the trouble: it could
// not be reached, its answer was cut short or stalled, or it failed (5xx). A 503 is not: the
// region answers it for chunks still arriving, which a sibling would not have sooner.
func unreachable(err error) bool {
	var api *APIError
	if errors.As(err, &api) {
		return api.Status >= 500 && api.Status != http.StatusServiceUnavailable
	}
	return errors.Is(err, store.ErrUnavailable)
}

// answered notes that server base answered.
func (c *Client) answered(base *url.URL) {
	c.fo.mu.Lock()
	if len(c.fo.list) > 0 && c.fo.list[c.fo.cur] == base {
		c.fo.since, c.fo.streak = time.Time{}, time.Time{}
	}
	c.fo.mu.Unlock()
}

// failed notes that a request to server base failed with err (unreachable) and says whether to
// send it again (to the same server, or the next one once base has failed for
// FailoverAfter). With no other server, or after failures on every server for long enough
// that none is coming back, it says no.
func (c *Client) failed(base *url.URL, err error) bool {
	c.fo.mu.Lock()
	defer c.fo.mu.Unlock()
	n := len(c.fo.list)
	if n < 2 {
		return false
	}
	if c.fo.list[c.fo.cur] != base {
		return true // another request turned to the next server already
	}
	now := time.Now()
	after := c.failoverAfter()
	if c.fo.streak.IsZero() {
		c.fo.streak = now
	}
	if c.fo.since.IsZero() {
		c.fo.since = now
	}
	if now.Sub(c.fo.streak) > max(time.Minute, 3*after*time.Duration(n)) {
		return false
	}
	if now.Sub(c.fo.since) >= after {
		c.fo.cur = (c.fo.cur + 1) % n
		c.fo.since = time.Time{}
		c.logger().Warn("the region's server stopped answering; carrying on with the next", "from", base.String(),
			"to", c.fo.list[c.fo.cur].String(), "err", err)
	}
	return true
}

// retryPause is the pause before a request that failed on an unreachable server is sent again.
const retryPause = 250 * time.Millisecond

// pause waits retryPause or until ctx ends.
func pause(ctx context.Context) error { return ctxtime.Sleep(ctx, retryPause) }
