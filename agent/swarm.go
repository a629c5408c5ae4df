package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"tms/agentwire"
	"tms/manifest"
	"tms/store"
	"tms/swarm"
)

// swarmWindow is how many chunks a member fetches at once.
const swarmWindow = 10

// maxLinger bounds how long a member that finished serves its peers, whatever the region says.
const maxLinger = 2 * time.Minute

// swarmSession is a deploy's or update's membership of its region's swarm (docs/swarm.md): it
// fetches the chunks the disk lacks where the region's tracker says, checks each against its
// id, and serves what it holds to the other members. It is the export's Fetcher.
type swarmSession struct {
	c      *Client
	v      *store.Version
	chunks []manifest.ID
	index  map[manifest.ID]int
	server *peerServer
	peers  peerClient
	codec  *store.Codec
	pr     *reporter
	log    *slog.Logger
	bufs   sync.Pool
	closed sync.Once

	mu      sync.Mutex
	polled  bool      // the tracker answered this session once
	token   string    // the peer token
	tokenAt time.Time // when the tracker gave it
	failed  []agentwire.SwarmFailure
	known   map[string]agentwire.SwarmPeer
	lingerD time.Duration
}

// joinSwarm starts the member's peer service for version v, whose disk is a.Disk.
func (a *Agent) joinSwarm(c *Client, v *store.Version, pr *reporter) (*swarmSession, error) {
	chunks := swarm.Chunks(v.Manifest)
	addr := a.PeerListen
	if addr == "" {
		addr = ":0"
	}
	srv, err := newPeerServer(v, chunks, a.Disk, addr, a.log(), a.peerWrap)
	if err != nil {
		return nil, err
	}
	s := &swarmSession{c: c, v: v, chunks: chunks, index: srv.index, server: srv, codec: store.NewCodec(0), pr: pr,
		log: a.log(), known: map[string]agentwire.SwarmPeer{}}
	s.peers.cert, s.peers.timeout = srv.cert, a.peerTimeout
	size := int(v.Manifest.ChunkSize)
	s.bufs.New = func() any { b := make([]byte, size); return &b }
	return s, nil
}

// close stops serving peers (once; later calls do nothing).
func (s *swarmSession) close() {
	s.closed.Do(func() {
		s.server.Close()
		s.peers.close()
	})
}

type fetched struct {
	chunk int
	peer  string
	frame []byte
	err   error
	bad   bool // the source sent bytes that are not the chunk
	gone  bool // no connection to the source could be made
	fatal bool // writing failed, or the region itself sent bad bytes: the export stops
}

// Fetch brings every chunk in need (imageio.Fetcher). Everything else the version has is on the
// disk already and is served to peers from the start.
func (s *swarmSession) Fetch(ctx context.Context, need []manifest.ID, put func(ctx context.Context, id manifest.ID, data []byte) error) error {
	missing := map[int]bool{}
	for _, id := range need {
		i, ok := s.index[id]
		if !ok {
			return fmt.Errorf("chunk %s is not one of version %s's", id.Short(), s.v.ID.Short())
		}
		missing[i] = true
	}
	for i := range s.chunks {
		if !missing[i] {
			s.server.held(i, nil)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	// At most swarmWindow fetches run, so each finds room for its result and none is left
	// behind: the writes they make end before Fetch returns.
	results := make(chan fetched, swarmWindow)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	inflight := map[int]bool{}
	start := func(a agentwire.SwarmAssignment, from func(context.Context, manifest.ID) ([]byte, error)) {
		inflight[a.Chunk] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- s.fetchOne(ctx, a, from, put)
		}()
	}
	unicast := false
	var wait time.Duration
	for len(missing) > 0 {
		if len(inflight) < swarmWindow && wait == 0 {
			if unicast {
				for i := range missing {
					if len(inflight) >= swarmWindow {
						break
					}
					if !inflight[i] {
						start(agentwire.SwarmAssignment{Chunk: i}, s.c.GetChunkFrame)
					}
				}
			} else {
				rep, err := s.poll(ctx, swarmWindow-len(inflight), false)
				var e *APIError
				switch {
				case errors.As(err, &e) && e.Status == http.StatusNotFound && !e.Retry:
					s.log.Info("the region runs no swarm: fetching every chunk from it", "reason", e.Msg)
					unicast = true
					continue
				case err != nil && ctx.Err() == nil && !Permanent(err):
					s.log.Warn("swarm: cannot reach the tracker; asking again", "err", err)
					wait = time.Second
				case err != nil:
					return err
				default:
					for _, a := range rep.Assign {
						if !missing[a.Chunk] || inflight[a.Chunk] {
							continue
						}
						from := s.c.GetChunkFrame
						if a.Peer != "" {
							p, tok := s.peer(a.Peer)
							from = func(ctx context.Context, id manifest.ID) ([]byte, error) { return s.peers.get(ctx, p, tok, id) }
						}
						start(a, from)
					}
					if len(rep.Assign) == 0 {
						wait = max(time.Duration(rep.RetryMS)*time.Millisecond, 50*time.Millisecond)
					}
				}
			}
		}
		if len(inflight) == 0 && wait == 0 {
			wait = 100 * time.Millisecond
		}
		var timer <-chan time.Time
		if wait > 0 {
			timer = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
			wait = 0
		case r := <-results:
			delete(inflight, r.chunk)
			if r.fatal {
				return r.err
			}
			if r.err != nil {
				s.log.Debug("swarm: fetch failed", "chunk", r.chunk, "peer", r.peer, "err", r.err)
				if r.bad {
					s.log.Warn("swarm: a peer sent bad bytes; it is reported and not asked again", "peer", r.peer, "err", r.err)
				}
				s.mu.Lock()
				if len(s.failed) < agentwire.MaxSwarmFailures {
					s.failed = append(s.failed, agentwire.SwarmFailure{Chunk: r.chunk, Peer: r.peer, Bad: r.bad, Gone: r.gone, Reason: truncate(r.err.Error(), 500)})
				}
				s.mu.Unlock()
				continue
			}
			delete(missing, r.chunk)
			s.server.held(r.chunk, r.frame)
			wait = 0
		}
	}
	return nil
}

// fetchOne fetches, checks and writes one assigned chunk.
func (s *swarmSession) fetchOne(ctx context.Context, a agentwire.SwarmAssignment, from func(context.Context, manifest.ID) ([]byte, error),
	put func(context.Context, manifest.ID, []byte) error) fetched {
	id := s.chunks[a.Chunk]
	r := fetched{chunk: a.Chunk, peer: a.Peer}
	began := time.Now()
	frame, err := from(ctx, id)
	if err != nil {
		r.err, r.bad, r.gone = err, errors.Is(err, ErrBadPeer), errors.Is(err, errPeerGone)
		// The region refusing a chunk for good (the share bringing the version failed, say)
		// ends the task: asking the tracker again would only be sent back to it.
		r.fatal = a.Peer == "" && Permanent(err)
		return r
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	data, err := s.codec.Decompress((*bp)[:0], frame, manifest.MaxChunkSize)
	if err == nil && s.v.Manifest.Hash.Sum(data) != id {
		err = fmt.Errorf("it hashes to something else")
	}
	if err != nil {
		r.err, r.bad = fmt.Errorf("%w: chunk %s: %v", ErrBadPeer, id.Short(), err), true
		if a.Peer == "" {
			r.err, r.fatal = fmt.Errorf("chunk %s from the region: %w", id.Short(), store.ErrHashMismatch), true
		}
		return r
	}
	if err := put(ctx, id, data); err != nil {
		r.err, r.fatal = err, true
		return r
	}
	s.pr.fetch.Add(int64(len(data)))
	r.frame = frame
	s.log.Debug("swarm: chunk fetched", "chunk", a.Chunk, "peer", a.Peer, "took", time.Since(began).Round(time.Millisecond))
	return r
}

// peer returns what the tracker said of member id, and the member's current token.
func (s *swarmSession) peer(id string) (agentwire.SwarmPeer, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.known[id], s.token
}

// poll calls the tracker: what the member holds, what failed, how many it can take.
func (s *swarmSession) poll(ctx context.Context, want int, done bool) (agentwire.SwarmReply, error) {
	s.mu.Lock()
	failed := s.failed
	s.failed = nil
	fresh := !s.polled
	renew := s.token == "" || time.Since(s.tokenAt) > swarm.TokenTTL/2
	s.mu.Unlock()
	req := agentwire.SwarmRequest{Port: s.server.Port(), Key: s.server.PublicKey(), Have: s.server.haveSnapshot(), Want: want, Done: done,
		Failed: failed, Fresh: fresh, Renew: renew, KeysTag: agentwire.KeysTag(s.server.signingKeys())}
	rep, err := s.c.Swarm(ctx, req)
	if err != nil {
		s.mu.Lock()
		s.failed = append(failed, s.failed...)
		s.mu.Unlock()
		return rep, err
	}
	if len(rep.Keys) > 0 {
		s.server.setKeys(rep.Keys)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polled = true
	if rep.Token != "" {
		s.token, s.tokenAt = rep.Token, time.Now()
	}
	for _, p := range rep.Peers {
		s.known[p.Member] = p
	}
	// Only what the reply can mean is kept: a chunk of the version, from a peer this session
	// knows. One from a peer it does not is handed back, so its source's slot is freed.
	ok := rep.Assign[:0]
	for _, a := range rep.Assign {
		if a.Chunk < 0 || a.Chunk >= len(s.chunks) {
			continue
		}
		if _, named := s.known[a.Peer]; a.Peer != "" && !named {
			if len(s.failed) < agentwire.MaxSwarmFailures {
				s.failed = append(s.failed, agentwire.SwarmFailure{Chunk: a.Chunk, Peer: a.Peer, Reason: "the region did not name this peer"})
			}
			continue
		}
		ok = append(ok, a)
	}
	rep.Assign = ok
	return rep, nil
}

// finish tells the tracker the member holds the whole version, and learns how long to keep
// serving after the task's end is reported.
func (s *swarmSession) finish(ctx context.Context) {
	rep, err := s.poll(ctx, 0, true)
	if err != nil {
		s.log.Debug("swarm: could not tell the tracker the write is done", "err", err)
		return
	}
	s.lingerD = min(time.Duration(rep.LingerMS)*time.Millisecond, maxLinger)
}

// lingerIdle ends a member's linger early: when no peer asked it for a chunk for this long, the
// others have what they need from it (or from others), and the terminal goes on to reboot.
var lingerIdle = time.Second

// linger serves peers for as long as the tracker asked, or until none asked for a chunk for
// lingerIdle, then stops.
func (s *swarmSession) linger(ctx context.Context) {
	if s.lingerD > 0 {
		s.log.Info("swarm: serving peers a little longer", "for_at_most", s.lingerD)
		start := time.Now()
		end := time.NewTimer(s.lingerD)
		defer end.Stop()
		tick := time.NewTicker(lingerIdle / 4)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-ctx.Done():
				break wait
			case <-end.C:
				break wait
			case now := <-tick.C:
				last := s.server.lastAsked()
				if last.Before(start) {
					last = start
				}
				if now.Sub(last) >= lingerIdle {
					s.log.Info("swarm: no peer asked for a chunk lately; stopped serving", "after", now.Sub(start).Round(time.Millisecond))
					break wait
				}
			}
		}
	}
	s.close()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
