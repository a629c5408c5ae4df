// Package bootsvc is a region's boot service: what a classroom PC meets when it boots from the
// network. DHCP (package bootsvc/dhcpd, proxy or full) points PXE firmware at an iPXE binary
// served by TFTP (bootsvc/tftpd) and iPXE at its script over HTTP, served here; the script boots
// the in-memory OS (kernel and initrd, also served here) when the terminal has a capture or
// deploy to do, and the terminal's own disk otherwise. Wake-on-LAN wakes terminals that are off.
//
// Every script request names the terminal's MAC, which anyone can forge. So the URL DHCP hands a
// terminal with a task carries a secret minted for that one boot (Scripts.ScriptURL); only a
// request with that secret gets the in-memory OS and, on its kernel command line, the task token
// the agent presents to the region. Without it the answer is "boot your own disk".
//
//	sc := &bootsvc.Scripts{Inventory: inv, Endpoint: "http://10.0.5.2:8301", BootDir: "/var/lib/tms/bootenv"}
//	sc.Routes(mux)
//	dhcp.ScriptURL = sc.ScriptURL
package bootsvc

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/template"
	"time"

	"tms/state"
)

//go:embed templates/*.ipxe
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{"safe": safe}).ParseFS(templateFS, "templates/*.ipxe"))

// safe keeps only characters that cannot end an iPXE line or start a command or a variable, for
// names that appear in scripts' comments and messages.
func safe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._:/@,-", r):
			return r
		}
		return '_'
	}, s)
}

// SecretTTL is how long the secret in a script URL stays good: from the DHCP answer to iPXE's
// request for the script takes seconds.
const SecretTTL = 5 * time.Minute

// Scripts serves terminals' iPXE scripts and the in-memory OS.
type Scripts struct {
	Inventory *state.Inventory
	// Endpoint is the region's HTTP service as terminals reach it, e.g. http://10.0.5.2:8301.
	Endpoint string
	// BootDir holds vmlinuz and initrd (tms bootenv build).
	BootDir string
	// Args are added to the in-memory OS's kernel command line (e.g. "console=ttyS0").
	Args string
	Log  *slog.Logger
	Now  func() time.Time

	mu      sync.Mutex
	secrets map[string]secret // by MAC
}

type secret struct {
	hash    [32]byte
	expires time.Time
}

func (s *Scripts) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Scripts) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Routes registers the script and boot file handlers on mux.
func (s *Scripts) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /boot/ipxe", s.script)
	mux.HandleFunc("GET /boot/{file}", s.file)
}

// ScriptURL is the URL of mac's iPXE script, for DHCP to hand to iPXE. For a terminal with a
// capture or deploy to do it carries a secret good for one boot; otherwise none.
func (s *Scripts) ScriptURL(mac net.HardwareAddr) string {
	q := url.Values{"mac": {mac.String()}}
	if s.pending(context.Background(), mac.String()) != nil {
		b := make([]byte, 24)
		rand.Read(b)
		sec := base64.RawURLEncoding.EncodeToString(b)
		s.mu.Lock()
		if s.secrets == nil || len(s.secrets) > 4096 {
			s.secrets = map[string]secret{}
		}
		s.secrets[mac.String()] = secret{hash: sha256.Sum256([]byte(sec)), expires: s.now().Add(SecretTTL)}
		s.mu.Unlock()
		q.Set("s", sec)
	}
	return strings.TrimRight(s.Endpoint, "/") + "/boot/ipxe?" + q.Encode()
}

// pending returns mac's unfinished capture or deploy task, or nil.
func (s *Scripts) pending(ctx context.Context, mac string) *state.BootAction {
	a, err := s.Inventory.BootAction(ctx, mac, s.now())
	if err != nil || a.Action == "local" || a.Task == "" {
		return nil
	}
	t, err := s.Inventory.Task(ctx, a.Task)
	if err != nil || t.Finished() || t.MAC != mac {
		return nil
	}
	return &a
}

// take consumes mac's secret if sec is it and it has not expired.
func (s *Scripts) take(mac, sec string) bool {
	if sec == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.secrets[mac]
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(sec))
	if subtle.ConstantTimeCompare(h[:], e.hash[:]) != 1 {
		return false
	}
	delete(s.secrets, mac)
	return s.now().Before(e.expires)
}

// ScriptData is what a script template sees.
type ScriptData struct {
	MAC      string
	Terminal string
	Action   string
	Task     string
	Kernel   string // URLs of the in-memory OS
	Initrd   string
	Args     string // the kernel command line
	Reason   string // why the terminal boots its own disk
}

func (s *Scripts) script(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	mac, err := state.NormalizeMAC(r.URL.Query().Get("mac"))
	if err != nil {
		// iPXE shows the script's error text; a malformed request still boots the local disk.
		s.render(w, "local.ipxe", ScriptData{Reason: "the script URL has no valid MAC"})
		return
	}
	if err := s.Inventory.Seen(ctx, mac, remoteIP(r), s.now()); err != nil {
		s.log().Warn("could not record a terminal as seen", "mac", mac, "err", err)
	}
	d := ScriptData{MAC: mac}
	if t, err := s.Inventory.Terminal(ctx, mac); err == nil {
		d.Terminal = t.Name
	}
	a := s.pending(ctx, mac)
	switch {
	case a == nil:
		d.Reason = "no task"
		s.render(w, "local.ipxe", d)
		return
	case !s.take(mac, r.URL.Query().Get("s")):
		s.log().Warn("script request without this boot's secret: booting the local disk", "mac", mac, "remote", r.RemoteAddr)
		d.Reason = "this boot's secret is missing or used"
		s.render(w, "local.ipxe", d)
		return
	}
	token := state.NewToken()
	if err := s.Inventory.SetBootAction(ctx, mac, *a, token); err != nil {
		s.log().Error("could not record the boot's token", "mac", mac, "err", err)
		d.Reason = "the region could not record this boot"
		s.render(w, "local.ipxe", d)
		return
	}
	base := strings.TrimRight(s.Endpoint, "/")
	d.Action, d.Task = a.Action, a.Task
	d.Kernel, d.Initrd = base+"/boot/vmlinuz", base+"/boot/initrd"
	d.Args = strings.TrimSpace(fmt.Sprintf("initrd=initrd %s tms.region=%s tms.token=%s", s.Args, base, token))
	s.log().Info("terminal boots the in-memory OS", "mac", mac, "task", a.Task, "action", a.Action)
	s.render(w, "task.ipxe", d)
}

func (s *Scripts) render(w http.ResponseWriter, name string, d ScriptData) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, d); err != nil {
		http.Error(w, "#!ipxe\necho tms: script error\nexit\n", http.StatusInternalServerError)
		return
	}
	w.Write(b.Bytes())
}

// BootFiles are the only files served under /boot/.
var BootFiles = []string{"vmlinuz", "initrd"}

func (s *Scripts) file(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ok := false
	for _, f := range BootFiles {
		ok = ok || f == name
	}
	if !ok || s.BootDir == "" {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(s.BootDir, name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			http.Error(w, name+" is not built: run tms bootenv build", http.StatusNotFound)
			return
		}
		http.Error(w, "cannot read "+name, http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
