// Package bootsvc is a region's boot service: what a classroom PC meets when it boots from the
// network. DHCP (package bootsvc/dhcpd, proxy or full) points PXE firmware at an iPXE binary
// served by TFTP (bootsvc/tftpd) and iPXE at its script over HTTP, served here; the script boots
// the in-memory OS (kernel and initrd, also served here) when the terminal has a capture or
// deploy to do, and the terminal's own disk otherwise. Wake-on-LAN wakes terminals that are off.
//
// Every script request names the terminal's MAC, which anyone can forge, and a DHCP answer is
// read by every PC that asks with that MAC, so no DHCP answer carries a secret. Instead the
// script request of a terminal with a task claims the terminal's boot for the address it came
// from (Claimer, the region's agent API): the script puts a token for that one boot on the kernel
// command line, good only from that address, and a second machine claiming the same boot fails
// the task, naming both addresses. A terminal without a task gets "boot your own disk".
//
//	sc := &bootsvc.Scripts{Inventory: inv, Claims: api, Endpoint: "http://10.0.5.2:8301", BootDir: "/var/lib/tms/bootenv"}
//	sc.Routes(mux)
//	dhcp.ScriptURL = sc.ScriptURL
package bootsvc

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"tms/agentwire"
	"tms/bootenv"
	"tms/manifest"
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

// Claimer claims a terminal's boot into its pending task for the address its iPXE asked from,
// and returns the task's boot action and the boot's token (a zero action when the terminal has
// nothing to do). A rival claimant is an error.
type Claimer interface {
	ClaimNetworkBoot(ctx context.Context, mac, ip string) (state.BootAction, string, error)
}

// BootEnvs makes a version of the in-memory OS ready to serve (*bootenv.Versions).
type BootEnvs interface {
	Materialize(ctx context.Context, version string) (bootenv.Served, error)
}

// Scripts serves terminals' iPXE scripts and the in-memory OS.
type Scripts struct {
	Inventory *state.Inventory
	Claims    Claimer
	// Endpoint is where iPXE reaches the scripts and boot files, e.g. http://10.0.5.2:8301:
	// plain HTTP, since iPXE cannot check tms's CA.
	Endpoint string
	// AgentEndpoint is the region's agent API as the in-memory OS reaches it, put on its kernel
	// command line (https:// when the region has a certificate); empty means Endpoint.
	AgentEndpoint string
	// BootDir holds vmlinuz and initrd (tms bootenv build): what terminals boot when the
	// region has no current bootenv version and the terminal no probe.
	BootDir string
	// BootEnvs materializes published versions of the in-memory OS (package bootenv): the
	// region's current one (the settings key state.SettingBootEnv) or a probe's. Nil: this
	// server serves BootDir only, and refuses a terminal that should boot a version.
	BootEnvs BootEnvs
	// Args are added to the in-memory OS's kernel command line (e.g. "console=ttyS0").
	Args string
	Log  *slog.Logger
	Now  func() time.Time
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
	mux.HandleFunc("GET /boot/{version}/{file}", s.versionFile)
}

// ScriptURL is the URL of mac's iPXE script, for DHCP to hand to iPXE. It holds no secret:
// every PC that asks DHCP with mac's address reads it.
func (s *Scripts) ScriptURL(mac net.HardwareAddr) string {
	return strings.TrimRight(s.Endpoint, "/") + "/boot/ipxe?" + url.Values{"mac": {mac.String()}}.Encode()
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
	// BootEnv is the version of the in-memory OS the script boots; empty: the plain BootDir.
	BootEnv string
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
	ip := remoteIP(r)
	a, token, err := s.Claims.ClaimNetworkBoot(ctx, mac, ip)
	var re *state.RivalError
	switch {
	case errors.As(err, &re):
		s.log().Warn("two machines claimed one terminal's boot: its task fails", "mac", mac, "first", re.First, "second", re.Second)
		d.Reason = "two machines claimed this terminal's boot; its task failed"
		s.render(w, "local.ipxe", d)
		return
	case err != nil:
		s.log().Error("could not claim a terminal's boot", "mac", mac, "err", err)
		d.Reason = "the region could not record this boot"
		s.render(w, "local.ipxe", d)
		return
	case token == "":
		d.Reason = "no task"
		s.render(w, "local.ipxe", d)
		return
	}
	base := strings.TrimRight(s.Endpoint, "/")
	d.Action, d.Task = string(a.Action), a.Task
	version, err := s.bootEnv(ctx, a)
	if err != nil {
		// The task waits for a boot that does not come, and says so when it gives up.
		s.log().Error("cannot serve the in-memory OS this terminal should boot", "mac", mac, "task", a.Task, "err", err)
		d.Reason = "the region cannot serve the in-memory OS it should: see its log"
		s.render(w, "local.ipxe", d)
		return
	}
	d.Kernel, d.Initrd = base+"/boot/vmlinuz", base+"/boot/initrd"
	bootenvArg := ""
	if version != "" {
		d.BootEnv = version
		d.Kernel, d.Initrd = base+"/boot/"+version+"/vmlinuz", base+"/boot/"+version+"/initrd"
		bootenvArg = " tms.bootenv=" + version
	}
	agentBase := base
	if s.AgentEndpoint != "" {
		agentBase = strings.TrimRight(s.AgentEndpoint, "/")
	}
	d.Args = strings.TrimSpace(fmt.Sprintf("initrd=initrd %s tms.region=%s tms.token=%s%s", s.Args, agentBase, token, bootenvArg))
	s.log().Info("terminal boots the in-memory OS", "mac", mac, "task", a.Task, "action", a.Action, "bootenv", version, "remote", ip)
	s.render(w, "task.ipxe", d)
}

// bootEnv is the version of the in-memory OS a terminal whose boot action is a boots: a
// probe's own (the canary's override), else the region's current one, else none (BootDir).
// The version is materialized here if this server has not yet, so its files are there when
// iPXE asks for them.
func (s *Scripts) bootEnv(ctx context.Context, a state.BootAction) (string, error) {
	version := ""
	if a.Action == agentwire.ActionProbe {
		if a.Version == "" {
			return "", errors.New("a probe that names no bootenv version")
		}
		version = a.Version
	} else {
		cur, err := s.Inventory.CurrentBootEnv(ctx)
		if err != nil {
			return "", fmt.Errorf("the region's current bootenv: %w", err)
		}
		if cur.Value == "" {
			return "", nil
		}
		version = cur.Value
	}
	if s.BootEnvs == nil {
		return "", fmt.Errorf("bootenv version %s: this server serves only its boot directory", version)
	}
	if _, err := s.BootEnvs.Materialize(ctx, version); err != nil {
		return "", err
	}
	return version, nil
}

// versionFile serves a file of a version of the in-memory OS, materializing it first if this
// server has not yet (from its own store: only a version central signed).
func (s *Scripts) versionFile(w http.ResponseWriter, r *http.Request) {
	version, name := r.PathValue("version"), r.PathValue("file")
	ok := false
	for _, f := range BootFiles {
		ok = ok || f == name
	}
	if _, err := manifest.ParseID(version); !ok || err != nil || len(version) != 2*manifest.IDLen || s.BootEnvs == nil {
		http.NotFound(w, r)
		return
	}
	sv, err := s.BootEnvs.Materialize(r.Context(), version)
	if err != nil {
		s.log().Error("cannot serve a bootenv version", "version", version, "err", err)
		http.Error(w, "bootenv version "+version+" cannot be served: see the region's log", http.StatusNotFound)
		return
	}
	serveFile(w, r, filepath.Join(sv.Dir, name), name)
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
	serveFile(w, r, filepath.Join(s.BootDir, name), name)
}

func serveFile(w http.ResponseWriter, r *http.Request, path, name string) {
	f, err := os.Open(path)
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
