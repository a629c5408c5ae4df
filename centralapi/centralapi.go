// Package centralapi is central's HTTP service: health checks, login and user management. Login
// and passwords go over this service, never through Temporal, whose histories would keep them.
//
//	h := centralapi.New(centralapi.Options{Users: catalog, Key: key, Log: log})
//	http.Handle("/", h)  // GET /healthz, POST /v1/login, /v1/users..., POST /v1/regions/{id}/token
//
// Every request body is bounded (MaxBody) and read as strict JSON; every error is JSON,
// {"error": "..."}; logins are rate limited per user name and per client address; the user
// endpoints need an admin's token (a user may change their own password).
package centralapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"tms/auth"
	"tms/signing"
	"tms/state"
	"tms/store"
)

// MaxBody bounds every request body.
const MaxBody = 8 << 10

// Users is where the users live (central's catalog: *state.Catalog).
type Users interface {
	AddUser(ctx context.Context, u state.User, now time.Time) error
	User(ctx context.Context, name string) (state.User, error)
	Users(ctx context.Context) ([]state.User, error)
	RemoveUser(ctx context.Context, name, adminRole string) error
	SetPassword(ctx context.Context, name, hash string, now time.Time) error
}

var _ Users = (*state.Catalog)(nil)

// Options configure the handler.
type Options struct {
	Users Users
	// Key is central's signing key: it signs the tokens.
	Key *signing.PrivateKey
	Log *slog.Logger
	// LoginLife is how long a login token lasts (default auth.DefaultLoginLife).
	LoginLife time.Duration
	// PerUser and PerAddress bound login attempts (default: 5 at once, one more every minute
	// per user name; 20 at once, one more every 10 seconds per client address).
	PerUser, PerAddress *auth.Limiter
	// API bounds the other /v1 calls per client address (default 60 at once, 10 a second).
	API *auth.Limiter
	Now func() time.Time
}

// Handler serves central's HTTP API.
type Handler struct {
	o   Options
	mux *http.ServeMux
}

// New returns the handler.
func New(o Options) *Handler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LoginLife <= 0 {
		o.LoginLife = auth.DefaultLoginLife
	}
	if o.PerUser == nil {
		o.PerUser = &auth.Limiter{Burst: 5, Every: time.Minute}
	}
	if o.PerAddress == nil {
		o.PerAddress = &auth.Limiter{Burst: 20, Every: 10 * time.Second}
	}
	if o.API == nil {
		o.API = &auth.Limiter{Burst: 60, Every: 100 * time.Millisecond}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Handler{o: o, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	h.mux.HandleFunc("POST /v1/login", h.login)
	h.mux.HandleFunc("GET /v1/users", h.admin(h.listUsers))
	h.mux.HandleFunc("POST /v1/users", h.admin(h.addUser))
	h.mux.HandleFunc("DELETE /v1/users/{name}", h.admin(h.removeUser))
	h.mux.HandleFunc("PUT /v1/users/{name}/password", h.setPassword)
	h.mux.HandleFunc("POST /v1/regions/{region}/token", h.admin(h.regionToken))
	return h
}

// Mount serves the handler's /v1/ routes on mux (central's HTTP service, server.CentralMux,
// which answers /healthz and /metrics itself).
func (h *Handler) Mount(mux *http.ServeMux) { mux.Handle("/v1/", h) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/v1/login" {
		if ok, wait := h.o.API.Allow(clientAddr(r), h.o.Now()); !ok {
			h.o.Log.Warn("central API call refused", "addr", clientAddr(r), "path", r.URL.Path, "rule", "too many calls from this address")
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
			writeError(w, http.StatusTooManyRequests, "too many calls from "+clientAddr(r)+": slow down")
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) { writeJSON(w, code, Error{Error: msg}) }

// readJSON reads a bounded, strict JSON body into v.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "send application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxBody))
		} else {
			writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		}
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad JSON body: more than one value")
		return false
	}
	return true
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// LoginRequest is POST /v1/login's body.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// LoginResponse is what a login returns.
type LoginResponse struct {
	User    string    `json:"user"`
	Role    auth.Role `json:"role"`
	Regions []string  `json:"regions,omitempty"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	addr := clientAddr(r)
	if wait, ok := h.allowAddress(addr); !ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many login attempts from %s: try again in %s", addr, wait.Round(time.Second)))
		return
	}
	var req LoginRequest
	if !readJSON(w, r, &req) {
		return
	}
	lr, code, err := h.checkLogin(r.Context(), req, addr)
	if err != nil {
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "60")
		}
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, lr)
}

func (h *Handler) allowAddress(addr string) (time.Duration, bool) {
	ok, wait := h.o.PerAddress.Allow(addr, h.o.Now())
	if !ok {
		h.o.Log.Warn("login refused", "addr", addr, "rule", "too many attempts from this address")
	}
	return wait, ok
}

// Login checks a user's password for another front end (the Temporal UI's login page in tms
// dev), with the same limits, log and answers as POST /v1/login; code is the HTTP status that
// goes with err.
func (h *Handler) Login(ctx context.Context, user, password, addr string) (LoginResponse, int, error) {
	if wait, ok := h.allowAddress(addr); !ok {
		return LoginResponse{}, http.StatusTooManyRequests, fmt.Errorf("too many login attempts from %s: try again in %s", addr, wait.Round(time.Second))
	}
	return h.checkLogin(ctx, LoginRequest{User: user, Password: password}, addr)
}

func (h *Handler) checkLogin(ctx context.Context, req LoginRequest, addr string) (LoginResponse, int, error) {
	now := h.o.Now()
	if auth.ValidateUserName(req.User) != nil || len(req.Password) > auth.MaxPasswordLen {
		h.o.Log.Warn("login refused", "addr", addr, "user", clip(req.User), "rule", "bad user name or password length")
		return LoginResponse{}, http.StatusUnauthorized, auth.ErrPassword
	}
	if ok, wait := h.o.PerUser.Allow(req.User, now); !ok {
		h.o.Log.Warn("login refused", "addr", addr, "user", req.User, "rule", "too many attempts for this user")
		return LoginResponse{}, http.StatusTooManyRequests, fmt.Errorf("too many login attempts for %s: try again in %s", req.User, wait.Round(time.Second))
	}
	u, err := h.o.Users.User(ctx, req.User)
	if errors.Is(err, store.ErrNotFound) {
		auth.DummyCheck(req.Password)
		h.o.Log.Warn("login refused", "addr", addr, "user", req.User, "rule", "no such user")
		return LoginResponse{}, http.StatusUnauthorized, auth.ErrPassword
	}
	if err != nil {
		return LoginResponse{}, http.StatusInternalServerError, h.failed("login", err)
	}
	if err := auth.CheckPassword(u.PasswordHash, req.Password); err != nil {
		if !errors.Is(err, auth.ErrPassword) {
			return LoginResponse{}, http.StatusInternalServerError, h.failed("login", err)
		}
		h.o.Log.Warn("login refused", "addr", addr, "user", req.User, "rule", "wrong password")
		return LoginResponse{}, http.StatusUnauthorized, auth.ErrPassword
	}
	tok, c, err := auth.Mint(h.o.Key, auth.Claims{Subject: u.Name, Role: auth.Role(u.Role), Regions: u.Regions}, now, h.o.LoginLife)
	if err != nil {
		return LoginResponse{}, http.StatusInternalServerError, h.failed("login", err)
	}
	h.o.Log.Info("login", "user", u.Name, "role", u.Role, "addr", addr, "token", c.ID, "expires", c.Expires)
	return LoginResponse{User: u.Name, Role: c.Role, Regions: c.Regions, Token: tok, Expires: c.Expires}, http.StatusOK, nil
}

func (h *Handler) failed(what string, err error) error {
	h.o.Log.Error(what+" failed", "err", err)
	return errors.New(what + " failed on central: see central's log")
}

func (h *Handler) internal(w http.ResponseWriter, what string, err error) {
	h.o.Log.Error(what+" failed", "err", err)
	writeError(w, http.StatusInternalServerError, what+" failed on central: see central's log")
}

// caller verifies the request's bearer token.
func (h *Handler) caller(w http.ResponseWriter, r *http.Request) (*auth.Claims, bool) {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		writeError(w, http.StatusUnauthorized, "no token: run tms login")
		return nil, false
	}
	c, err := auth.Verify(h.o.Key.Public(), hdr, h.o.Now())
	if err != nil {
		h.o.Log.Warn("central API call refused", "addr", clientAddr(r), "path", r.URL.Path, "rule", err.Error())
		var exp *auth.ExpiredError
		if errors.As(err, &exp) {
			writeError(w, http.StatusUnauthorized, exp.Error())
		} else {
			writeError(w, http.StatusUnauthorized, err.Error()+": run tms login")
		}
		return nil, false
	}
	return c, true
}

func (h *Handler) admin(next func(http.ResponseWriter, *http.Request, *auth.Claims)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := h.caller(w, r)
		if !ok {
			return
		}
		if c.Role != auth.RoleAdmin {
			msg := fmt.Sprintf("%s %s may not manage users or region tokens: that is for admins", c.Role, c.Subject)
			h.o.Log.Warn("central API call refused", "who", c.Subject, "role", c.Role, "method", r.Method, "path", r.URL.Path, "rule", msg)
			writeError(w, http.StatusForbidden, msg)
			return
		}
		next(w, r, c)
	}
}

// UserInfo is a user as the API shows them (never the password hash).
type UserInfo struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Regions []string  `json:"regions"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

func (h *Handler) listUsers(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	us, err := h.o.Users.Users(r.Context())
	if err != nil {
		h.internal(w, "listing users", err)
		return
	}
	out := []UserInfo{}
	for _, u := range us {
		out = append(out, UserInfo{Name: u.Name, Role: u.Role, Regions: nonNil(u.Regions), Created: u.Created, Updated: u.Updated})
	}
	writeJSON(w, http.StatusOK, out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// AddUserRequest is POST /v1/users's body.
type AddUserRequest struct {
	Name     string   `json:"name"`
	Role     string   `json:"role"`
	Regions  []string `json:"regions"`
	Password string   `json:"password"`
}

// CheckUser checks a new user's fields: name, role, regions (only an operator's or viewer's,
// at most auth.MaxRegions, each a region id) and password rules.
func CheckUser(name, role string, regions []string, password string) error {
	if err := auth.ValidateUserName(name); err != nil {
		return err
	}
	rl, err := auth.ParseUserRole(role)
	if err != nil {
		return err
	}
	if rl == auth.RoleAdmin && len(regions) > 0 {
		return errors.New("an admin may act in every region: --region is for operators and viewers")
	}
	if rl == auth.RoleOperator && len(regions) == 0 {
		return errors.New("an operator needs at least one --region to act in")
	}
	if len(regions) > auth.MaxRegions {
		return fmt.Errorf("%d regions: at most %d", len(regions), auth.MaxRegions)
	}
	for _, r := range regions {
		if err := auth.ValidateRegion(r); err != nil {
			return err
		}
	}
	return auth.CheckPasswordRules(password)
}

func (h *Handler) addUser(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	var req AddUserRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := CheckUser(req.Name, req.Role, req.Regions, req.Password); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	hash, err := auth.HashPassword(req.Password)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	err = h.o.Users.AddUser(r.Context(), state.User{Name: req.Name, Role: req.Role, Regions: req.Regions, PasswordHash: hash}, h.o.Now())
	if errors.Is(err, state.ErrConflict) {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil {
		h.internal(w, "adding a user", err)
		return
	}
	h.o.Log.Info("user added", "by", c.Subject, "user", req.Name, "role", req.Role, "regions", req.Regions)
	writeJSON(w, http.StatusCreated, UserInfo{Name: req.Name, Role: req.Role, Regions: nonNil(req.Regions)})
}

func (h *Handler) removeUser(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	name := r.PathValue("name")
	err := h.o.Users.RemoveUser(r.Context(), name, string(auth.RoleAdmin))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "no user "+clip(name))
	case errors.Is(err, state.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		h.internal(w, "removing a user", err)
	default:
		h.o.Log.Info("user removed", "by", c.Subject, "user", name)
		w.WriteHeader(http.StatusNoContent)
	}
}

// PasswordRequest is PUT /v1/users/{name}/password's body.
type PasswordRequest struct {
	Password string `json:"password"`
}

// setPassword: an admin sets anyone's password, a user their own.
func (h *Handler) setPassword(w http.ResponseWriter, r *http.Request) {
	c, ok := h.caller(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if c.Role != auth.RoleAdmin && (c.Subject != name || c.Role == auth.RoleWorker) {
		msg := fmt.Sprintf("%s %s may change their own password only, not %s's", c.Role, c.Subject, clip(name))
		h.o.Log.Warn("central API call refused", "who", c.Subject, "path", r.URL.Path, "rule", msg)
		writeError(w, http.StatusForbidden, msg)
		return
	}
	var req PasswordRequest
	if !readJSON(w, r, &req) {
		return
	}
	hash, err := auth.HashPassword(req.Password)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	err = h.o.Users.SetPassword(r.Context(), name, hash, h.o.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "no user "+clip(name))
	case err != nil:
		h.internal(w, "setting a password", err)
	default:
		h.o.Log.Info("password changed", "by", c.Subject, "user", name)
		w.WriteHeader(http.StatusNoContent)
	}
}

// RegionTokenRequest is POST /v1/regions/{region}/token's body.
type RegionTokenRequest struct {
	// Expires is a Go duration, like 720h (default 720h).
	Expires string `json:"expires"`
}

// RegionTokenResponse carries a region's worker token.
type RegionTokenResponse struct {
	Region  string    `json:"region"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// DefaultRegionTokenLife is how long a region's token lasts unless asked otherwise.
const DefaultRegionTokenLife = 720 * time.Hour

func (h *Handler) regionToken(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	region := r.PathValue("region")
	if err := auth.ValidateRegion(region); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req RegionTokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	life := DefaultRegionTokenLife
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d <= 0 || d > auth.MaxTokenLife {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("expires %q: want a duration like 720h, at most %s", clip(req.Expires), auth.MaxTokenLife))
			return
		}
		life = d
	}
	tok, claims, err := auth.Mint(h.o.Key, RegionWorker(region), h.o.Now(), life)
	if err != nil {
		h.internal(w, "minting a region token", err)
		return
	}
	h.o.Log.Info("region token minted", "by", c.Subject, "region", region, "token", claims.ID, "expires", claims.Expires)
	writeJSON(w, http.StatusOK, RegionTokenResponse{Region: region, Token: tok, Expires: claims.Expires})
}

// RegionWorker is the claims of region's worker: it may poll its own region's queues only.
func RegionWorker(region string) auth.Claims {
	return auth.Claims{Subject: "region:" + region, Role: auth.RoleWorker, Regions: []string{region}}
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
