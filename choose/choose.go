// Package choose decides which of a region's servers answers a terminal's network boot. In
// proxyDHCP mode every server of the region hears a PC's DHCPDISCOVER; exactly one healthy
// server should answer it.
//
// The rule: the servers whose location labels include all of the terminal's labels (its
// groups' labels, merged; none for a terminal in no labelled group or not enrolled) come first;
// if none does, every healthy server is a candidate. Among the candidates the order is
// rendezvous hashing of (MAC, server id): stable while the set of servers stays the same,
// spread over the servers, and when the first goes stale the next takes its terminals only.
//
//	order := choose.Order(mac, terminalLabels, healthyServers)
//	answer := len(order) > 0 && order[0] == self
//
// View holds what a server needs to decide per packet, refreshed with its heartbeat, so a
// DHCP packet costs a map lookup and a few hashes, never a database query.
package choose

import (
	"crypto/sha256"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Server is a healthy server of the region as the choice sees it.
type Server struct {
	ID     string
	Labels map[string]string
}

// Matches reports whether labels include every one of want (an empty want matches anything).
func Matches(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// score is the rendezvous weight of server id for mac: the same on every server, whatever
// its process, so that they all agree.
func score(mac net.HardwareAddr, id string) uint64 {
	h := sha256.New()
	h.Write(mac)
	h.Write([]byte{0})
	h.Write([]byte(id))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Order returns the ids of servers in the order they answer mac: the servers whose labels
// include all of labels first, then the others, each part by descending rendezvous weight
// (ties by id). The first is the chosen one; if it is gone, the next, and so on. Duplicate ids
// count once.
func Order(mac net.HardwareAddr, labels map[string]string, servers []Server) []string {
	type ranked struct {
		id    string
		match bool
		score uint64
	}
	rs := make([]ranked, 0, len(servers))
	for _, s := range servers {
		rs = append(rs, ranked{id: s.ID, match: Matches(s.Labels, labels), score: score(mac, s.ID)})
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		switch {
		case a.match != b.match:
			if a.match {
				return -1
			}
			return 1
		case a.score != b.score:
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		if len(out) > 0 && slices.Contains(out, r.id) {
			continue
		}
		out = append(out, r.id)
	}
	return out
}

// Chosen is the server that answers mac: the first of Order, or "" if there is no server.
func Chosen(mac net.HardwareAddr, labels map[string]string, servers []Server) string {
	var best Server
	var bestMatch bool
	var bestScore uint64
	found := false
	for _, s := range servers {
		m, sc := Matches(s.Labels, labels), score(mac, s.ID)
		better := !found || (m && !bestMatch) ||
			(m == bestMatch && (sc > bestScore || (sc == bestScore && s.ID < best.ID)))
		if better {
			best, bestMatch, bestScore, found = s, m, sc, true
		}
	}
	return best.ID
}

// View is a server's cached picture of its region: the healthy servers and the labels of the
// terminals in labelled groups. Its Answer is safe for concurrent use and never blocks; Update
// replaces the picture at once.
type View struct {
	self      string
	staleView time.Duration
	now       func() time.Time
	cur       atomic.Pointer[picture]
}

type picture struct {
	servers []Server
	labels  map[string]map[string]string // by MAC in lower-case aa:bb:cc:dd:ee:ff form
	at      time.Time
	hasSelf bool
}

// NewView makes the view of server self. A picture older than staleView (its server could not
// read the registry for that long) answers every terminal: in proxyDHCP mode two answers are
// harmless where none strands the PC. A zero staleView never counts a picture as old.
func NewView(self string, staleView time.Duration) *View {
	return &View{self: self, staleView: staleView, now: time.Now}
}

// Update replaces the picture: the region's healthy servers (self among them, normally) and
// each terminal's labels by MAC (aa:bb:cc:dd:ee:ff).
func (v *View) Update(healthy []Server, labels map[string]map[string]string) {
	p := &picture{servers: slices.Clone(healthy), labels: labels, at: v.now()}
	for _, s := range healthy {
		if s.ID == v.self {
			p.hasSelf = true
		}
	}
	v.cur.Store(p)
}

// Answer reports whether this server answers mac's network boot: it is the chosen one among
// the healthy servers. Before the first Update, with an old picture, or when this server is
// not among the healthy ones (its own heartbeat is not recorded), it answers: better two
// offers than none.
func (v *View) Answer(mac net.HardwareAddr) bool {
	p := v.cur.Load()
	if p == nil || !p.hasSelf || len(p.servers) <= 1 || (v.staleView > 0 && v.now().Sub(p.at) > v.staleView) {
		return true
	}
	return Chosen(mac, p.labels[mac.String()], p.servers) == v.self
}

// Servers returns the healthy servers of the current picture.
func (v *View) Servers() []Server {
	if p := v.cur.Load(); p != nil {
		return slices.Clone(p.servers)
	}
	return nil
}
