package agent

// The protocol between an agent and its region's HTTP API (package agentapi is the region's side).
// An agent says it booted (POST /v1/agent/boot) and gets its boot action: "local", or a capture or
// deploy task with a token minted for this boot. With that token, and only for that task, it reads
// the task, the image's manifest and chunks (deploy), asks which chunks the region lacks and
// uploads them, then the manifest (capture), and reports progress and the outcome. An agent with
// nothing to do long-polls for commands (reboot, poweroff).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"tms/manifest"
)

// Header names.
const (
	// TerminalHeader carries the agent's MAC on task requests.
	TerminalHeader = "Tms-Terminal"
)

// Limits on what an agent may send in one request.
const (
	// MaxMissingQuery is the most chunk ids one missing-chunks query may name.
	MaxMissingQuery = 4096
	// MaxBatchBytes bounds an upload batch's body.
	MaxBatchBytes = 64 << 20
	// MaxFrame bounds one compressed chunk: zstd never expands data by more than a little.
	MaxFrame = manifest.MaxChunkSize + manifest.MaxChunkSize/64 + 1024
)

// BootRequest is what an agent says when it starts.
type BootRequest struct {
	MAC          string `json:"mac"`
	Disk         string `json:"disk,omitempty"`      // the device (or file) it would capture or write
	DiskSize     int64  `json:"disk_size,omitempty"` // in bytes; 0 if it has no disk
	AgentVersion string `json:"agent_version,omitempty"`
	// BootToken is the task token the terminal's iPXE script put on the kernel command line
	// (tms.token); empty for an agent started otherwise.
	BootToken string `json:"boot_token,omitempty"`
}

// BootReply is the agent's boot action.
type BootReply struct {
	Action string `json:"action"`          // "local", "capture" or "deploy"
	Task   string `json:"task,omitempty"`  // the task's id
	Token  string `json:"token,omitempty"` // the secret for this boot's task requests
}

// TaskInfo describes the task an agent's token opens.
type TaskInfo struct {
	ID   string `json:"id"`
	Kind string `json:"kind"` // "capture" or "deploy"
	// Image is the image name a capture publishes under.
	Image string `json:"image,omitempty"`
	// Version is the version a deploy writes.
	Version string `json:"version,omitempty"`
	// DiskSize is the disk size the deployed version needs.
	DiskSize int64 `json:"disk_size,omitempty"`
	// Signature is central's ed25519 signature of the deployed version (package signing), and
	// Signer the id of the key that made it. The agent checks it with its own copy of
	// central's public key before it writes a byte; a region cannot forge it.
	Signature []byte `json:"signature,omitempty"`
	Signer    string `json:"signer,omitempty"`
	// ChunkSize and Hash are how a capture must cut and name chunks (those of the image's
	// current version, so unchanged chunks are recognised).
	ChunkSize int64         `json:"chunk_size"`
	Hash      manifest.Hash `json:"hash"`
}

// MissingRequest asks which chunks the region lacks.
type MissingRequest struct {
	Chunks []manifest.ID `json:"chunks"`
}

// MissingReply lists them.
type MissingReply struct {
	Missing []manifest.ID `json:"missing"`
}

// Progress is an agent's progress report.
type Progress struct {
	Phase      string `json:"phase"` // reading, uploading, writing, verifying
	Done       int64  `json:"done"`  // bytes of the disk handled
	Total      int64  `json:"total"` // bytes of the disk
	MovedBytes int64  `json:"moved_bytes"`
}

// Done is an agent's report that its task ended. A deploy that succeeded reports what it wrote
// and Verified true; a task that failed reports Error.
type Done struct {
	Error        string `json:"error,omitempty"`
	Written      int64  `json:"written,omitempty"`
	WrittenBytes int64  `json:"written_bytes,omitempty"`
	Skipped      int64  `json:"skipped,omitempty"`
	Verified     bool   `json:"verified,omitempty"`
}

// Result is a finished task's outcome as the region records it (for a capture, the new
// version; for a deploy, what was written). Its JSON is what the region's WaitForAgent activity
// reads.
type Result struct {
	Version      string `json:"version,omitempty"`
	DiskSize     int64  `json:"disk_size,omitempty"`
	StoredBytes  int64  `json:"stored_bytes,omitempty"`
	Chunks       int64  `json:"chunks,omitempty"`
	Written      int64  `json:"written,omitempty"`
	WrittenBytes int64  `json:"written_bytes,omitempty"`
	Skipped      int64  `json:"skipped,omitempty"`
	Verified     bool   `json:"verified,omitempty"`
}

// Command is what a long-polling agent is told to do; empty when the poll timed out.
type Command struct {
	Command string `json:"command,omitempty"` // "reboot" or "poweroff"
}

// Error is the body of every error reply.
type Error struct {
	Error string `json:"error"`
	// Retry says the agent may try the same request again later.
	Retry bool `json:"retry,omitempty"`
}

// A chunk batch is the body of an upload: records of a chunk id (manifest.IDLen bytes), the
// frame's length (4 bytes, big endian) and the zstd frame, back to back.

// AppendBatch appends one record to a batch.
func AppendBatch(b []byte, id manifest.ID, frame []byte) []byte {
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(frame)))
	return append(b, frame...)
}

// ErrBatch marks a malformed chunk batch.
var ErrBatch = errors.New("malformed chunk batch")

// ReadBatch calls fn for each record of a batch read from r, stopping at the first error. A
// frame longer than MaxFrame, a truncated record and a body over MaxBatchBytes are ErrBatch.
func ReadBatch(r io.Reader, fn func(id manifest.ID, frame []byte) error) error {
	var head [manifest.IDLen + 4]byte
	var total int64
	buf := make([]byte, 0, 1<<20)
	for n := 0; ; n++ {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			if err == io.ErrUnexpectedEOF {
				return fmt.Errorf("%w: record %d is cut short in its header", ErrBatch, n)
			}
			return err
		}
		var id manifest.ID
		copy(id[:], head[:manifest.IDLen])
		size := int64(binary.BigEndian.Uint32(head[manifest.IDLen:]))
		if size == 0 || size > MaxFrame {
			return fmt.Errorf("%w: record %d (chunk %s) has a frame of %d bytes; want 1 to %d", ErrBatch, n, id.Short(), size, MaxFrame)
		}
		total += int64(len(head)) + size
		if total > MaxBatchBytes {
			return fmt.Errorf("%w: more than %d bytes", ErrBatch, MaxBatchBytes)
		}
		if int64(cap(buf)) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return fmt.Errorf("%w: record %d (chunk %s) is cut short", ErrBatch, n, id.Short())
			}
			return err
		}
		if err := fn(id, buf); err != nil {
			return err
		}
	}
}
