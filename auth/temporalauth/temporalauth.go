// Package temporalauth plugs tms's policy (package auth) into the Temporal frontend: a
// ClaimMapper that reads the bearer token every call carries (the CLI's, a worker's, or the one
// the Temporal UI forwards) and an Authorizer that applies auth.Decide to the call. Both run
// where the CLI and the UI pass alike, so one set of rules holds for both.
//
//	a := temporalauth.New(temporalauth.Options{Key: central.Public(), Lookup: lookup, Log: log})
//	temporal.NewServer(..., temporal.WithAuthorizer(a), temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return a }))
//
// Temporal's own services reach the frontend through its internal-frontend (see devtemporal),
// whose claim mapper the server fixes to the "temporal/internal" principal; the Authorizer lets
// that principal do everything. The public frontend's claim mapper (this one) never produces it.
package temporalauth

import (
	"context"
	"log/slog"
	"time"

	"go.temporal.io/server/common/authorization"

	"tms/auth"
	"tms/signing"
)

// AuthType marks claims this package's ClaimMapper made.
const AuthType = "tms"

// Options configure the authorizer.
type Options struct {
	// Key is central's public key, which signs every token.
	Key signing.PublicKey
	// Lookup finds the region of an existing task or schedule (NewFrontendLookup); nil refuses
	// operators every call that needs it.
	Lookup auth.Lookup
	// Log receives every refusal (and, at debug level, every decision).
	Log *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Authorizer is both the frontend's ClaimMapper and its Authorizer.
type Authorizer struct{ o Options }

var (
	_ authorization.Authorizer                      = (*Authorizer)(nil)
	_ authorization.ClaimMapper                     = (*Authorizer)(nil)
	_ authorization.ClaimMapperWithAuthInfoRequired = (*Authorizer)(nil)
)

// New returns the authorizer.
func New(o Options) *Authorizer {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Authorizer{o: o}
}

// tokenResult is what the claim mapper found, for the authorizer (Claims.Extensions).
type tokenResult struct {
	claims *auth.Claims
	err    error
}

// GetClaims verifies the bearer token. A refused token still yields claims (with the reason in
// Extensions), so the authorizer can say which rule refused it: an error here would reach the
// caller as a bare "Request unauthorized".
func (a *Authorizer) GetClaims(info *authorization.AuthInfo) (*authorization.Claims, error) {
	if info == nil || info.AuthToken == "" {
		return nil, nil
	}
	c, err := auth.Verify(a.o.Key, info.AuthToken, a.o.Now())
	if err != nil {
		return &authorization.Claims{AuthType: AuthType, Extensions: tokenResult{err: err}}, nil
	}
	return &authorization.Claims{Subject: c.Subject, System: systemRole(c.Role), AuthType: AuthType, Extensions: tokenResult{claims: c}}, nil
}

// AuthInfoRequired: calls without a token or certificate reach the authorizer with no claims.
func (a *Authorizer) AuthInfoRequired() bool { return true }

// systemRole is the nearest Temporal role, for Temporal's own logs and metrics only: tms decides
// on its own claims.
func systemRole(r auth.Role) authorization.Role {
	switch r {
	case auth.RoleAdmin:
		return authorization.RoleAdmin
	case auth.RoleWorker:
		return authorization.RoleWorker
	case auth.RoleOperator:
		return authorization.RoleWriter
	case auth.RoleViewer:
		return authorization.RoleReader
	}
	return authorization.RoleUndefined
}

// Authorize applies auth.Decide, and logs every refusal with who and what.
func (a *Authorizer) Authorize(ctx context.Context, claims *authorization.Claims, target *authorization.CallTarget) (authorization.Result, error) {
	if claims != nil && claims.AuthType == authorization.InternalPrincipalType && claims.Subject == authorization.InternalPrincipalName {
		// Temporal's system workers (schedules, batch, ...) through the internal-frontend.
		return authorization.Result{Decision: authorization.DecisionAllow}, nil
	}
	var c *auth.Claims
	var tokErr error
	if claims != nil {
		tr, ok := claims.Extensions.(tokenResult)
		if claims.AuthType != AuthType || !ok {
			// Claims from a claim mapper other than ours (a TLS certificate's, say): tms does
			// not know them.
			tokErr = auth.ErrToken
		} else {
			c, tokErr = tr.claims, tr.err
		}
	}
	call := auth.Call{API: target.APIName, Namespace: target.Namespace, Request: target.Request}
	d := auth.Decide(ctx, c, tokErr, call, a.o.Lookup)
	who := "nobody"
	if c != nil {
		who = string(c.Role) + " " + c.Subject
	}
	if !d.Allow {
		args := []any{"who", who, "api", target.APIName, "namespace", target.Namespace, "rule", d.Reason}
		if id := workflowID(target.Request); id != "" {
			args = append(args, "workflow", id)
		}
		if c != nil {
			args = append(args, "token", c.ID)
		}
		a.o.Log.WarnContext(ctx, "temporal call refused", args...)
		return authorization.Result{Decision: authorization.DecisionDeny, Reason: d.Reason}, nil
	}
	a.o.Log.DebugContext(ctx, "temporal call allowed", "who", who, "api", target.APIName, "rule", d.Reason)
	return authorization.Result{Decision: authorization.DecisionAllow}, nil
}

func workflowID(req any) string {
	switch r := req.(type) {
	case interface{ GetWorkflowId() string }:
		return r.GetWorkflowId()
	case interface{ GetScheduleId() string }:
		return "schedule:" + r.GetScheduleId()
	}
	return ""
}
