package devenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"tms/auth"
	"tms/auth/temporalauth"
	"tms/centralapi"
	"tms/server"
	"tms/uiproxy"
	"tms/workers"
)

// dial connects to the embedded Temporal as worker name (with Auth: with worker tokens minted
// with central's key, scoped to regions if any).
func (e *Env) dial(ctx context.Context, name string, regions []string) (client.Client, error) {
	o := client.Options{HostPort: e.Temporal.Address(), Namespace: e.Namespace, Logger: newTemporalLogger(e.log)}
	if e.opts.Auth {
		workers.Bearer(&o, (&auth.WorkerTokens{Key: e.key, Name: name, Regions: regions}).Token)
	}
	return client.DialContext(ctx, o)
}

// authLookup is the authorizer's lookup of tasks' regions: a client of the embedded frontend
// itself, dialed on first use (the server it asks is not running yet when the lookup is made).
func (e *Env) authLookup() *temporalauth.FrontendLookup {
	return &temporalauth.FrontendLookup{Service: func() (workflowservice.WorkflowServiceClient, error) {
		e.lookupMu.Lock()
		defer e.lookupMu.Unlock()
		if e.lookupClient != nil {
			return e.lookupClient.WorkflowService(), nil
		}
		if e.lookupStopped {
			return nil, errors.New("tms dev is stopping")
		}
		addr := e.temporalAddr.Load()
		if addr == nil {
			return nil, errors.New("the Temporal server is not running yet")
		}
		o := client.Options{HostPort: *addr, Namespace: e.Namespace, Logger: newTemporalLogger(e.log)}
		workers.Bearer(&o, (&auth.WorkerTokens{Key: e.key, Name: "authorizer"}).Token)
		c, err := client.NewLazyClient(o)
		if err != nil {
			return nil, err
		}
		e.lookupClient = c
		return c.WorkflowService(), nil
	}}
}

// closeLookup closes the authorizer's client, if it made one.
func (e *Env) closeLookup() {
	e.lookupMu.Lock()
	defer e.lookupMu.Unlock()
	e.lookupStopped = true
	if e.lookupClient != nil {
		e.lookupClient.Close()
	}
}

// firstAdmin makes sure, with Auth, that the first admin exists.
func (e *Env) firstAdmin(ctx context.Context) error {
	if !e.opts.Auth {
		return nil
	}
	pw, created, err := centralapi.FirstAdmin(ctx, e.Central.Catalog, filepath.Join(e.opts.DataDir, "admin-password"), time.Now())
	if err != nil {
		return fmt.Errorf("first admin: %w", err)
	}
	e.AdminPassword, e.AdminCreated = pw, created
	return nil
}

// centralRoutes add central's API (login, users, region tokens) to its HTTP service.
func (e *Env) centralRoutes(mux *http.ServeMux, c *server.Central) {
	e.centralAPI = centralapi.New(centralapi.Options{Users: c.Catalog, Key: e.key, Log: e.log})
	e.centralAPI.Mount(mux)
}

// CentralURL is central's HTTP service, http://host:port.
func (e *Env) CentralURL() string { return e.Central.URL() }

// Token mints a token for a user of the given role, as a login would (tests).
func (e *Env) Token(user string, role auth.Role, regions ...string) (string, error) {
	tok, _, err := auth.Mint(e.key, auth.Claims{Subject: user, Role: role, Regions: regions}, time.Now(), time.Hour)
	return tok, err
}

// Auth reports whether the environment runs with tms's authorizer (Options.Auth).
func (e *Env) Auth() bool { return e.opts.Auth }

// startUIProxy serves the login page in front of the Temporal UI on the UI's port.
func (e *Env) startUIProxy() error {
	up, err := url.Parse("http://" + e.Temporal.UIAddress())
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(e.opts.Host, strconv.Itoa(e.opts.UIPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("temporal UI login page: %w (is another tms dev running?)", err)
	}
	srv := &http.Server{Handler: uiproxy.New(uiproxy.Options{Upstream: up, Login: e.centralAPI, Log: e.log}), ReadHeaderTimeout: 10 * time.Second}
	e.uiProxy = ln.Addr().String()
	go srv.Serve(ln)
	e.stopUI = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
	return nil
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// registerSearchAttributes adds the search attributes this tms's tasks carry to the namespace,
// as an admin: with Auth, central's worker may not (a namespace made by an older tms dev lacks
// the newer ones). Without Auth, central adds them itself when it starts.
func (e *Env) registerSearchAttributes(ctx context.Context) error {
	if !e.opts.Auth {
		return nil
	}
	tok, _, err := auth.Mint(e.key, auth.Claims{Subject: "tms-dev", Role: auth.RoleAdmin}, time.Now(), time.Minute)
	if err != nil {
		return err
	}
	o := client.Options{HostPort: e.Temporal.Address(), Namespace: e.Namespace, Logger: newTemporalLogger(e.log)}
	workers.Bearer(&o, func(context.Context) (string, error) { return tok, nil })
	c, err := client.DialContext(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	return server.EnsureSearchAttributes(ctx, c, e.Namespace)
}
