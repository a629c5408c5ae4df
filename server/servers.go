package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tms/choose"
	"tms/settings"
	"tms/sibling"
	"tms/state"
)

// A region may run several servers on one shared inventory database. Each heartbeats in the
// region's registry (state.Server), refreshes its picture of the healthy servers and of the
// terminals' location labels (choose.View, which its DHCP service asks per packet), and
// applies the settings central pushed through any of them.

// beat records this server's heartbeat now, with the boot environment it serves.
func (r *Region) beat(ctx context.Context) error {
	s := r.self
	s.LastSeen = time.Now().UTC()
	if be := r.bootEnv.Load(); be != nil {
		s.BootEnv = *be
	} else {
		s.BootEnv = r.servedBootEnv(ctx)
	}
	return r.Inventory.Heartbeat(ctx, s, state.StaleAfter(r.heartbeat))
}

// servedBootEnv is the region's current boot environment if this server has it ready to
// serve, else "". A rollout materializes the version on the server that runs its activity; the
// region's other servers take it here, in the background, from their stores (which ask their
// siblings), so each is ready before a terminal asks it.
func (r *Region) servedBootEnv(ctx context.Context) string {
	if r.BootEnvs == nil {
		return ""
	}
	st, err := r.BootEnv(ctx)
	if err != nil || st.Current == "" {
		return ""
	}
	if st.Ready {
		return st.Current
	}
	if r.materializing.CompareAndSwap(false, true) {
		go func() {
			defer r.materializing.Store(false)
			mctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // ends with the heartbeats
			defer cancel()
			if _, err := r.BootEnvs.Materialize(mctx, st.Current); err != nil {
				r.log.Warn("this server could not make the region's boot environment ready; it tries again at the next heartbeat",
					"bootenv", st.Current, "err", err)
			}
		}()
	}
	return ""
}

// startedFile, in a server's data directory, holds when its last process started (Unix
// nanoseconds): a restart after a crash takes the server's id back at once, where another
// process with the same id elsewhere is refused while the first is healthy.
const startedFile = "server-started"

// claim takes this server's id in the registry with its first heartbeat, and remembers the
// claim in dataDir.
func (r *Region) claim(ctx context.Context, dataDir string) error {
	path := filepath.Join(dataDir, startedFile)
	if b, err := os.ReadFile(path); err == nil {
		if prev, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			if err := r.Inventory.ReleaseServer(ctx, r.ServerID, time.Unix(0, prev)); err != nil {
				return err
			}
		}
	}
	if err := r.beat(ctx); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(r.self.Started.UnixNano(), 10)+"\n"), 0o644); err != nil {
		return fmt.Errorf("server %s: %w", r.ServerID, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("server %s: %w", r.ServerID, err)
	}
	return nil
}

// SetBootEnv records the boot environment version this server serves: the registry has it
// from the next heartbeat on.
func (r *Region) SetBootEnv(version string) { r.bootEnv.Store(&version) }

// Servers lists the region's servers as the registry has them, and whether each is healthy.
func (r *Region) Servers(ctx context.Context) ([]state.Server, error) {
	return r.Inventory.Servers(ctx)
}

// fullDHCPAlone refuses full DHCP while another healthy server of the region runs it: leases
// are each server's own, so two full-mode servers on one LAN would hand out conflicting
// addresses.
func (r *Region) fullDHCPAlone(ctx context.Context) error {
	servers, err := r.Inventory.Servers(ctx)
	if err != nil {
		return err
	}
	now, stale := time.Now(), state.StaleAfter(r.heartbeat)
	for _, s := range servers {
		if s.ID != r.ServerID && s.DHCP == "full" && s.Healthy(now, stale) {
			return fmt.Errorf("server %s (%s) of this region runs full DHCP: two full-mode DHCP servers on one network hand out conflicting leases; "+
				"set region.boot.dhcp to proxy or off on one of them (docs/operations.md, Several servers per region)", s.ID, s.Endpoint)
		}
	}
	return nil
}

// startHeartbeat refreshes the view at once, then heartbeats every r.heartbeat until Stop.
func (r *Region) startHeartbeat(log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	r.stopHeartbeat, r.heartbeatDone = cancel, make(chan struct{})
	log = log.With("server", r.ServerID)
	r.refresh(ctx, log)
	go func() {
		defer close(r.heartbeatDone)
		t := time.NewTicker(r.heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := r.beat(ctx); err != nil && ctx.Err() == nil {
				if errors.Is(err, state.ErrServerTaken) {
					log.Error("another process took this server's id while it missed its heartbeats: stop one of them", "err", err)
				} else {
					log.Warn("the server could not record its heartbeat", "err", err)
				}
			}
			r.refresh(ctx, log)
		}
	}()
}

// refresh reads the healthy servers and the terminals' labels into the view, and applies the
// settings if they changed in the database.
func (r *Region) refresh(ctx context.Context, log *slog.Logger) {
	if err := r.refreshView(ctx, log); err != nil && ctx.Err() == nil {
		log.Warn("the server could not read the region's servers; it answers every PC until it can", "err", err)
	}
	if err := r.reloadSettings(ctx, log); err != nil && ctx.Err() == nil {
		log.Warn("the server could not read the region's settings", "err", err)
	}
}

func (r *Region) refreshView(ctx context.Context, log *slog.Logger) error {
	servers, err := r.Inventory.Servers(ctx)
	if err != nil {
		return err
	}
	labels, err := r.Inventory.TerminalLabels(ctx)
	if err != nil {
		return err
	}
	now, stale := time.Now(), state.StaleAfter(r.heartbeat)
	var healthy []choose.Server
	siblings := []sibling.Sibling{}
	for _, s := range servers {
		if s.Healthy(now, stale) {
			healthy = append(healthy, choose.Server{ID: s.ID, Labels: s.Labels})
			if s.ID != r.ServerID {
				siblings = append(siblings, sibling.Sibling{ID: s.ID, Endpoint: s.Endpoint})
			}
		} else if s.ID == r.ServerID {
			log.Warn("this server's own heartbeat is stale in the registry")
		}
		if s.ID != r.ServerID && s.DHCP == "full" && r.self.DHCP == "full" && s.Healthy(now, stale) {
			log.Error("another server of the region runs full DHCP: two full-mode DHCP servers hand out conflicting leases",
				"other", s.ID, "endpoint", s.Endpoint)
		}
	}
	r.View.Update(healthy, labels)
	r.siblings.Store(&siblings)
	return nil
}

// registrySiblings are the region's other healthy servers as the last heartbeat read them.
func (r *Region) registrySiblings(context.Context) ([]sibling.Sibling, error) {
	if p := r.siblings.Load(); p != nil {
		return *p, nil
	}
	return nil, nil
}

// reloadSettings applies the overrides in the database when their counter moved: central's
// push reached one server of the region (ApplySetting); the others pick it up here, through
// the same settings.Live, whose OnChange hooks apply it.
func (r *Region) reloadSettings(ctx context.Context, log *slog.Logger) error {
	n, err := r.Inventory.SettingsVersion(ctx)
	if err != nil || n == r.settingsSeen {
		return err
	}
	overrides, err := r.Inventory.Settings(ctx)
	if err != nil {
		return err
	}
	for _, s := range overrides {
		cur, err := r.Settings.Get(s.Key)
		if err != nil {
			log.Warn("a setting in the region's database is left out: this tms does not know it", "key", s.Key)
			continue
		}
		if cur.Value == s.Value && cur.Source.Kind == settings.SourcePushed && cur.Source.At.Equal(s.SetAt) {
			continue
		}
		if _, err := r.Settings.Set(s.Key, s.Value, settings.Source{Kind: settings.SourcePushed, By: s.SetBy, At: s.SetAt, Task: s.Task}); err != nil {
			log.Warn("a setting central pushed is left out: this tms does not accept it", "key", s.Key, "value", s.Value, "err", err)
			continue
		}
		log.Info("applied a setting central pushed through another server of the region", "key", s.Key, "value", s.Value)
	}
	r.settingsSeen = n
	return nil
}
