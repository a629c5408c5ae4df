package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"tms/config"
	"tms/metrics"
	"tms/workflows"
)

// CentralMux is the handler of central's HTTP service (central.listen): GET /healthz answers
// "ok", GET /metrics serves central's series (no token: they hold counts only, see package
// metrics), and each of routes adds its own (e.g. sign-in).
func CentralMux(m *metrics.Central, routes ...func(*http.ServeMux)) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("GET /metrics", m.Handler())
	for _, r := range routes {
		r(mux)
	}
	return mux
}

// serveHTTP starts central's HTTP service on addr, HTTPS with t.
func (c *Central) serveHTTP(addr string, t config.ServerTLS, routes []func(*http.ServeMux, *Central)) error {
	var tc *tls.Config
	if t.Enabled() {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("central.tls: %w", err)
		}
		tc = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("central.listen: %w", err)
	}
	c.ln, c.tls = ln, tc != nil
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	add := make([]func(*http.ServeMux), len(routes))
	for i, r := range routes {
		add[i] = func(mux *http.ServeMux) { r(mux, c) }
	}
	c.http = &http.Server{Handler: CentralMux(c.Metrics, add...), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	srv := c.http
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.served <- err
		}
	}()
	return nil
}

// HTTPAddr is the address central's HTTP service listens on; empty without one.
func (c *Central) HTTPAddr() string {
	if c.ln == nil {
		return ""
	}
	return c.ln.Addr().String()
}

// URL is central's HTTP service as clients reach it on its listen address: http(s)://host:port;
// empty without one.
func (c *Central) URL() string {
	if c.ln == nil {
		return ""
	}
	if c.tls {
		return "https://" + c.HTTPAddr()
	}
	return "http://" + c.HTTPAddr()
}

// Wait returns when central's HTTP service stops by itself (an error) or ctx ends (nil).
func (c *Central) Wait(ctx context.Context) error {
	select {
	case err := <-c.served:
		return fmt.Errorf("central's HTTP service stopped: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// temporalTasks reads tasks from Temporal's visibility store for central's metrics.
type temporalTasks struct {
	c         client.Client
	namespace string
}

var _ metrics.TaskSource = temporalTasks{}

// CountTasks counts kind's tasks by execution status, one visibility query.
func (t temporalTasks) CountTasks(ctx context.Context, kind string) ([]metrics.TaskCount, error) {
	if strings.ContainsAny(kind, `'"\`) {
		return nil, fmt.Errorf("task kind %q", kind)
	}
	resp, err := t.c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: t.namespace,
		Query: fmt.Sprintf("%s = '%s' GROUP BY ExecutionStatus", workflows.AttrKind.GetName(), kind)})
	if err != nil {
		return nil, fmt.Errorf("counting %s tasks: %w", kind, err)
	}
	var out []metrics.TaskCount
	dc := converter.GetDefaultDataConverter()
	for _, g := range resp.GetGroups() {
		if len(g.GetGroupValues()) != 1 {
			continue
		}
		var status string
		if err := dc.FromPayload(g.GetGroupValues()[0], &status); err != nil {
			return nil, fmt.Errorf("counting %s tasks: a group of status %v: %w", kind, g.GetGroupValues()[0], err)
		}
		out = append(out, metrics.TaskCount{State: snake(status), Count: g.GetCount()})
	}
	return out, nil
}

// ClosedTasks lists at most limit tasks of tms's kinds that closed at or after since.
func (t temporalTasks) ClosedTasks(ctx context.Context, since time.Time, limit int) ([]metrics.ClosedTask, error) {
	kinds := make([]string, len(workflows.TaskKinds))
	for i, k := range workflows.TaskKinds {
		kinds[i] = "'" + k + "'"
	}
	q := fmt.Sprintf("%s IN (%s) AND CloseTime >= '%s'", workflows.AttrKind.GetName(), strings.Join(kinds, ", "),
		since.UTC().Format(time.RFC3339Nano))
	dc := converter.GetDefaultDataConverter()
	var out []metrics.ClosedTask
	var token []byte
	for len(out) < limit {
		resp, err := t.c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: t.namespace, Query: q,
			PageSize: int32(min(limit-len(out), 1000)), NextPageToken: token})
		if err != nil {
			return nil, fmt.Errorf("listing closed tasks: %w", err)
		}
		for _, e := range resp.GetExecutions() {
			if e.GetCloseTime() == nil {
				continue
			}
			var kind string
			if p, ok := e.GetSearchAttributes().GetIndexedFields()[workflows.AttrKind.GetName()]; ok {
				_ = dc.FromPayload(p, &kind) // a kind that does not decode is counted as "other"
			}
			out = append(out, metrics.ClosedTask{RunID: e.GetExecution().GetRunId(), Kind: kind,
				Start: e.GetStartTime().AsTime(), Close: e.GetCloseTime().AsTime()})
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	return out, nil
}

// snake spells an execution status as a label value: "ContinuedAsNew" becomes
// "continued_as_new".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
