package agentwire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// The swarm. The terminals of one deploy or update fetch chunks from each other, the region
// being the tracker and first seed (docs/swarm.md). Every few chunks an agent asks its region
// (SwarmRequest, with its task token) which chunks to fetch and from whom, telling it which
// chunks it holds; the region answers with assignments, each from a peer or from the region
// itself, a peer token that opens other members' chunks of this version to this member, and
// the keys that sign such tokens. Members serve chunks over TLS (each with a key of its own,
// which the region passes on to the members it sends there) at PeerChunkPath.

// Swarm limits.
const (
	// MaxSwarmWant is the most assignments an agent may ask for at once.
	MaxSwarmWant = 64
	// MaxSwarmFailures is the most failed fetches one request may report.
	MaxSwarmFailures = 256
	// MaxPeerToken bounds a peer token.
	MaxPeerToken = 1024
)

// PeerChunkPath is where a swarm member serves a chunk (GET, id at the end); PeerTokenHeader
// carries the requester's peer token.
const (
	PeerChunkPath   = "/v1/peer/chunks/"
	PeerTokenHeader = "Tms-Peer-Token"
)

// SwarmRequest is an agent's call to its region's tracker.
type SwarmRequest struct {
	// Port is where the agent serves chunks to its peers, on the address it reaches the region
	// from (the region takes the address from the connection, not from the agent).
	Port int `json:"port"`
	// Key is the ed25519 public key of the agent's TLS certificate for its peers.
	Key []byte `json:"key"`
	// Have is a bitmap over the version's distinct non-zero chunks in the order they first
	// appear in the manifest (bit i of byte i/8, least significant first): the chunks the agent
	// holds written and checked. It is sent whole each time, so a region that restarted
	// learns the swarm again from its members' next calls.
	Have []byte `json:"have"`
	// Want is how many more chunks the agent can fetch at once now (0: it only serves).
	Want int `json:"want"`
	// Done says the agent wrote and verified the whole version: it only serves from now on,
	// for LingerMS of the reply.
	Done bool `json:"done,omitempty"`
	// Failed are the fetches that failed since the last call.
	Failed []SwarmFailure `json:"failed,omitempty"`
	// Fresh says this is the first call of the agent's session: the region names every peer
	// it assigns again, though it named them to an earlier session of the same task.
	Fresh bool `json:"fresh,omitempty"`
	// Renew asks for a new peer token (the agent has none, or it is half way to expiring).
	Renew bool `json:"renew,omitempty"`
	// KeysTag is KeysTag of the signing keys the agent holds: the region sends its keys, and
	// a token they sign, only when its own differ.
	KeysTag string `json:"keys_tag,omitempty"`
}

// KeysTag names a set of token-signing keys in a few bytes, so an agent can say which it holds
// and the region need not send them on every call.
func KeysTag(keys [][]byte) string {
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte{byte(len(k))})
		h.Write(k)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// SwarmFailure is a fetch that failed.
type SwarmFailure struct {
	Chunk int    `json:"chunk"` // index into the distinct chunks
	Peer  string `json:"peer"`  // the member it was assigned from ("" for the region)
	// Bad says the peer sent bytes that were not the chunk (corrupt, cut short): the region
	// stops sending members to it. Otherwise the peer was busy, slow or gone.
	Bad bool `json:"bad,omitempty"`
	// Gone says no connection to the peer could be made: a member that finished and stopped
	// serving (its PC went on to reboot) is forgotten by the tracker.
	Gone   bool   `json:"gone,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// SwarmReply is the tracker's answer.
type SwarmReply struct {
	Member string `json:"member"` // the agent's name in the swarm
	// Token is the agent's peer token, sent to peers in PeerTokenHeader; it names the version,
	// the member, its address and its key, and expires. Empty: keep the one held (sent when the
	// request says Renew, or its KeysTag is not the region's).
	Token string `json:"token,omitempty"`
	// Keys are the region's keys that sign peer tokens (ed25519 public keys): a member serves a
	// requester whose token one of them signed. Empty: the agent's KeysTag named them.
	Keys [][]byte `json:"keys,omitempty"`
	// Peers are the members the assignments name that the region has not named to this
	// session of the agent yet.
	Peers []SwarmPeer `json:"peers,omitempty"`
	// Assign are the chunks to fetch now, each from a peer or from the region.
	Assign []SwarmAssignment `json:"assign,omitempty"`
	// RetryMS is how long to wait before asking again if nothing was assigned.
	RetryMS int `json:"retry_ms,omitempty"`
	// LingerMS is how long a member that finished keeps serving its peers.
	LingerMS int `json:"linger_ms,omitempty"`
}

// SwarmPeer is a member as others reach it.
type SwarmPeer struct {
	Member string `json:"member"`
	Addr   string `json:"addr"` // host:port
	Key    []byte `json:"key"`  // the ed25519 public key of its TLS certificate
}

// SwarmAssignment is one chunk to fetch.
type SwarmAssignment struct {
	Chunk int    `json:"chunk"`          // index into the distinct chunks
	Peer  string `json:"peer,omitempty"` // the member to fetch from; "" for the region
}

// Check bounds a request for a version of n distinct chunks.
func (r *SwarmRequest) Check(n int) error {
	if r.Port < 1 || r.Port > 65535 {
		return fmt.Errorf("swarm request: port %d is not a TCP port", r.Port)
	}
	if len(r.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("swarm request: key has %d bytes, want %d", len(r.Key), ed25519.PublicKeySize)
	}
	if want := (n + 7) / 8; len(r.Have) != want {
		return fmt.Errorf("swarm request: have is %d bytes, the version's %d chunks need %d", len(r.Have), n, want)
	}
	if n%8 != 0 && len(r.Have) > 0 && r.Have[len(r.Have)-1]>>(n%8) != 0 {
		return fmt.Errorf("swarm request: have marks chunks past the version's %d", n)
	}
	if len(r.KeysTag) > 64 {
		return fmt.Errorf("swarm request: keys tag of %d bytes, at most 64", len(r.KeysTag))
	}
	if r.Want < 0 || r.Want > MaxSwarmWant {
		return fmt.Errorf("swarm request: want %d is not between 0 and %d", r.Want, MaxSwarmWant)
	}
	if len(r.Failed) > MaxSwarmFailures {
		return fmt.Errorf("swarm request: %d failures reported, at most %d", len(r.Failed), MaxSwarmFailures)
	}
	for _, f := range r.Failed {
		if f.Chunk < 0 || f.Chunk >= n {
			return fmt.Errorf("swarm request: failure names chunk %d of %d", f.Chunk, n)
		}
		if len(f.Peer) > 128 || len(f.Reason) > 512 {
			return fmt.Errorf("swarm request: failure report too long")
		}
	}
	return nil
}
