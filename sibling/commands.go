package sibling

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"tms/agentwire"
	"tms/state"
)

// A terminal's agent polls one server for commands (the one it booted from, or its installed
// OS's region URL); the worker that sends it a reboot or poweroff may be any server's. A server
// whose own agent API has no poll from the terminal asks its siblings to deliver the command
// (POST /v1/sibling/commands): the one the agent polls passes it on.

// CommandRoute is the pattern of the sibling route that delivers a command.
const CommandRoute = "POST /v1/sibling/commands"

// maxCommandBody bounds a command request's body.
const maxCommandBody = 1 << 10

// CommandRequest asks a sibling to pass a command to a terminal's agent, if it polls there.
type CommandRequest struct {
	MAC     string            `json:"mac"`
	Command agentwire.Command `json:"command"`
}

// CommandReply says whether the sibling passed it on.
type CommandReply struct {
	Delivered bool `json:"delivered"`
}

// Mailbox is a server's agent API as the sibling route sees it: it passes a command to the
// terminal's agent if that agent polls this server (agentapi.Server.Deliver).
type Mailbox interface {
	Deliver(mac string, command agentwire.Command) bool
}

// ParseCommandRequest reads a command request's body: JSON of at most 1 KiB, a MAC address and
// a reboot or poweroff.
func ParseCommandRequest(b []byte) (CommandRequest, error) {
	var req CommandRequest
	if len(b) > maxCommandBody {
		return req, fmt.Errorf("a command request of %d bytes; at most %d", len(b), maxCommandBody)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return req, fmt.Errorf("a command request: %v", err)
	}
	if d.More() {
		return req, fmt.Errorf("a command request has bytes after its JSON")
	}
	mac, err := state.NormalizeMAC(req.MAC)
	if err != nil {
		return req, fmt.Errorf("a command request: %v", err)
	}
	req.MAC = mac
	if req.Command != agentwire.CommandReboot && req.Command != agentwire.CommandPoweroff {
		return req, fmt.Errorf("a command request: %.32q is not reboot or poweroff", req.Command)
	}
	return req, nil
}

func (h *Handler) command(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(w, r) {
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxCommandBody+1))
	if err != nil {
		return
	}
	req, err := ParseCommandRequest(b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var rep CommandReply
	if h.Mailbox != nil {
		rep.Delivered = h.Mailbox.Deliver(req.MAC, req.Command)
	}
	if rep.Delivered {
		h.log().Info("passed a sibling's command to a terminal's agent", "mac", req.MAC, "command", req.Command)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rep)
}

// Command asks the siblings, in order, to pass command to terminal mac's agent, and reports
// whether one did (its agent polls that sibling). Siblings that cannot be asked are passed
// over: the answer is then false, as for a terminal whose agent polls nobody.
func (f *Fetcher) Command(ctx context.Context, mac string, command agentwire.Command) (bool, error) {
	list, err := f.list(ctx)
	if err != nil {
		return false, err
	}
	body, err := json.Marshal(CommandRequest{MAC: mac, Command: command})
	if err != nil {
		return false, err
	}
	for _, s := range list {
		ok, err := f.command(ctx, s, body)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			f.log().Warn("a sibling could not be asked to pass on a command", "sibling", s.ID, "mac", mac, "err", err)
			continue
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func (f *Fetcher) command(ctx context.Context, s Sibling, body []byte) (bool, error) {
	base, err := url.Parse(s.Endpoint)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return false, fmt.Errorf("sibling %s: endpoint %q is not an http(s) URL", s.ID, s.Endpoint)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base.JoinPath("v1", "sibling", "commands").String(), bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	sign(req, f.Secret, f.from(), f.now())
	resp, err := f.client().Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var rep CommandReply
	if err := json.Unmarshal(b, &rep); err != nil {
		return false, fmt.Errorf("its answer: %v", err)
	}
	return rep.Delivered, nil
}
