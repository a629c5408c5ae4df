// Package swarm is the region's side of a swarm deploy: the tracker that tells each terminal
// writing a version which chunk to fetch from which peer (or from the region), and the peer
// tokens that open one member's chunks to another. docs/swarm.md describes the protocol and
// why the tracker chooses as it does; package agent is the members' side.
//
// A swarm is the set of terminals writing one version at one time. Chunks are named by their
// index in the version's distinct non-zero chunks (Chunks), which both sides compute from the
// manifest, and members say which they hold with a bitmap over those indexes (Bitmap).
package swarm

import "tms/manifest"

// Chunks returns the version's distinct non-zero chunk ids in the order they first appear.
func Chunks(m *manifest.Manifest) []manifest.ID {
	seen := make(map[manifest.ID]struct{}, len(m.Chunks))
	out := make([]manifest.ID, 0, len(m.Chunks))
	for _, id := range m.Chunks {
		if id.IsZero() {
			continue
		}
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// Bitmap is a set of chunk indexes: bit i of byte i/8, least significant first.
type Bitmap []byte

// NewBitmap returns an empty bitmap for n chunks.
func NewBitmap(n int) Bitmap { return make(Bitmap, (n+7)/8) }

// Has reports whether i is in the set.
func (b Bitmap) Has(i int) bool { return b[i/8]&(1<<(i%8)) != 0 }

// Set adds i.
func (b Bitmap) Set(i int) { b[i/8] |= 1 << (i % 8) }

// Count returns how many indexes the set holds.
func (b Bitmap) Count() int {
	n := 0
	for _, x := range b {
		for ; x != 0; x &= x - 1 {
			n++
		}
	}
	return n
}
