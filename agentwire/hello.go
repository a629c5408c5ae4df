package agentwire

import (
	"fmt"

	"tms/manifest"
)

// The agent service of a terminal's installed OS says hello when it starts (POST
// /v1/agent/hello, signed with the terminal's agent key): the terminal is up, and this is its
// disk. The region answers with the version it recorded for the terminal at its last deploy (or
// capture) and a few samples of that version's manifest: chunk 0 always, and up to
// MaxSamples-1 more spread over the disk. The service hashes those ranges of its disk and
// reports which differ (POST /v1/agent/hello/check); a difference means the disk no longer
// holds the recorded version (someone installed software, the disk was swapped), and the region
// forgets it, so the next update compares every block.

// MaxSamples bounds the chunk samples of a hello reply.
const MaxSamples = 8

// HelloRequest is the service's hello: the terminal's MAC, the agent's version, its disk's size.
type HelloRequest struct {
	MAC          string `json:"mac"`
	AgentVersion string `json:"agent_version,omitempty"`
	DiskSize     int64  `json:"disk_size"`
}

// DiskSample is one chunk of the recorded version: where it lies on the disk and its id (the
// zero id for an all-zero chunk).
type DiskSample struct {
	Index  int         `json:"index"`
	Offset int64       `json:"offset"`
	Length int64       `json:"length"`
	Chunk  manifest.ID `json:"chunk"`
}

// HelloReply is the version the region recorded for the terminal (empty: none, nothing to
// check) and the samples to check it with, hashed with Hash.
type HelloReply struct {
	Version string        `json:"version,omitempty"`
	Hash    manifest.Hash `json:"hash,omitempty"`
	Samples []DiskSample  `json:"samples,omitempty"`
	// Servers are the region's other healthy servers' endpoints, as in BootReply.
	Servers []string `json:"servers,omitempty"`
}

// Validate checks a hello reply before the agent reads its disk by it.
func (r HelloReply) Validate() error {
	if r.Version == "" {
		if len(r.Samples) > 0 {
			return fmt.Errorf("hello reply has samples but no version")
		}
		return nil
	}
	if _, err := manifest.ParseID(r.Version); err != nil {
		return fmt.Errorf("hello reply: version: %w", err)
	}
	if !r.Hash.Valid() {
		return fmt.Errorf("hello reply: hash %q is not blake3 or sha256", r.Hash)
	}
	if len(r.Samples) == 0 || len(r.Samples) > MaxSamples {
		return fmt.Errorf("hello reply has %d samples; want 1 to %d", len(r.Samples), MaxSamples)
	}
	for _, s := range r.Samples {
		if s.Index < 0 || s.Offset < 0 || s.Length <= 0 || s.Length > manifest.MaxChunkSize {
			return fmt.Errorf("hello reply: sample %d at %d+%d is out of bounds", s.Index, s.Offset, s.Length)
		}
	}
	return nil
}

// DiskCheck is what the service found: for Version (as the hello reply named it), the
// indexes of the samples whose bytes differ, or why the disk could not be read.
type DiskCheck struct {
	Version  string `json:"version"`
	Mismatch []int  `json:"mismatch,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Validate checks a disk check the region received.
func (c DiskCheck) Validate() error {
	if _, err := manifest.ParseID(c.Version); err != nil {
		return fmt.Errorf("disk check: version: %w", err)
	}
	if len(c.Mismatch) > MaxSamples {
		return fmt.Errorf("disk check names %d mismatches; a hello has at most %d samples", len(c.Mismatch), MaxSamples)
	}
	if len(c.Error) > 1024 {
		return fmt.Errorf("disk check error is %d bytes; at most 1024", len(c.Error))
	}
	return nil
}

// EnrollRequest trades an enrollment token for the terminal's agent key: POST
// /v1/agent/enroll, over HTTPS (or loopback), not signed (the terminal has no key yet).
type EnrollRequest struct {
	MAC   string `json:"mac"`
	Token string `json:"token"`
}

// MaxEnrollToken bounds the token an enroll request carries.
const MaxEnrollToken = 128

// EnrollReply carries the terminal's new agent key.
type EnrollReply struct {
	Key []byte `json:"key"`
}
