// Package uiproxy puts a tms login page in front of the Temporal UI, for people using it in a
// browser (which cannot set an Authorization header): the login keeps the user's token in an
// HttpOnly cookie, and every request the proxy forwards to the UI carries it as
// "Authorization: Bearer …", which the UI server passes on to the frontend's authorizer.
//
//	h := uiproxy.New(uiproxy.Options{Upstream: uiURL, Login: centralHandler})
//	http.ListenAndServe("127.0.0.1:8233", h)
//
// tms dev runs it on the UI's port (package devenv). The cookie is SameSite=Strict, so another
// site cannot make the browser send it; requests that carry their own Authorization header
// (curl, scripts) pass as they are.
package uiproxy

import (
	"context"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"tms/centralapi"
)

// Cookie is the cookie that holds the token.
const Cookie = "tms_token"

// Login checks a password (centralapi.Handler.Login).
type Login interface {
	Login(ctx context.Context, user, password, addr string) (centralapi.LoginResponse, int, error)
}

var _ Login = (*centralapi.Handler)(nil)

// Options configure the proxy.
type Options struct {
	// Upstream is the Temporal UI server.
	Upstream *url.URL
	Login    Login
	Log      *slog.Logger
	// Secure marks the cookie Secure (the proxy is served over https).
	Secure bool
}

type proxy struct {
	o  Options
	rp *httputil.ReverseProxy
}

// New returns the proxy.
func New(o Options) http.Handler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	p := &proxy{o: o}
	p.rp = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(o.Upstream)
		r.Out.Host = r.In.Host
		// The token travels as the header, not as a cookie the UI would not know.
		var keep []string
		for _, c := range r.In.Cookies() {
			if c.Name != Cookie {
				keep = append(keep, c.Name+"="+c.Value)
			}
		}
		r.Out.Header.Del("Cookie")
		if len(keep) > 0 {
			r.Out.Header.Set("Cookie", strings.Join(keep, "; "))
		}
		if r.In.Header.Get("Authorization") == "" {
			if c, err := r.In.Cookie(Cookie); err == nil && c.Value != "" {
				r.Out.Header.Set("Authorization", "Bearer "+c.Value)
			}
		}
	}}
	return p
}

// maxForm bounds the login form.
const maxForm = 8 << 10

var page = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>tms login</title></head>
<body style="font-family:sans-serif;max-width:24em;margin:4em auto">
<h1>tms</h1>
<p>Log in to use the Temporal UI.</p>
{{if .Error}}<p style="color:#b00">{{.Error}}</p>{{end}}
<form method="post" action="/tms-login">
<p><label>User <input name="user" autocomplete="username" autofocus></label></p>
<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>
<p><button type="submit">Log in</button></p>
</form>
</body></html>
`))

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/tms-login":
		switch r.Method {
		case http.MethodGet:
			p.page(w, http.StatusOK, "")
		case http.MethodPost:
			p.login(w, r)
		default:
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		}
		return
	case "/tms-logout":
		http.SetCookie(w, &http.Cookie{Name: Cookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: p.o.Secure, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/tms-login", http.StatusSeeOther)
		return
	}
	if _, err := r.Cookie(Cookie); err != nil && r.Header.Get("Authorization") == "" &&
		r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
		// A browser without a login: to the login page first.
		http.Redirect(w, r, "/tms-login", http.StatusSeeOther)
		return
	}
	p.rp.ServeHTTP(w, r)
}

func (p *proxy) page(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(code)
	page.Execute(w, struct{ Error string }{msg})
}

func (p *proxy) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		p.page(w, http.StatusBadRequest, "bad form")
		return
	}
	addr, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		addr = r.RemoteAddr
	}
	lr, code, err := p.o.Login.Login(r.Context(), r.PostFormValue("user"), r.PostFormValue("password"), addr)
	if err != nil {
		p.page(w, code, err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: Cookie, Value: lr.Token, Path: "/", Expires: lr.Expires, HttpOnly: true, Secure: p.o.Secure,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
