// Package agentwire is the protocol between a terminal's agent (package agent) and its region's
// HTTP API for agents (package agentapi): the JSON bodies, their words (task kinds, boot actions,
// commands, progress phases), header names and limits, the chunk batch format of uploads and the
// key signatures of requests made outside a task.
//
// It is a package of its own, beside both sides rather than inside either, because both sides
// speak it and neither should link the other: the region must not import the agent's runtime
// (disk I/O, the boot loop), and the agent, the static /init of the in-memory OS, must not link
// the region's Temporal and database code. It imports nothing of tms but manifest.
//
// An agent says it booted (POST /v1/agent/boot) and gets its boot action: [ActionLocal], or a
// capture, deploy or update task with a token minted for this boot. With that token, and only for
// that task, it reads the task, the image's manifest and chunks (deploy, update: many chunks'
// frames per request, see FramesRequest and ReadFrames; an update also the manifest of the
// version the disk holds), asks which chunks the region
// lacks and uploads them, then the manifest (capture), and reports progress and the outcome. An
// agent with nothing to do long-polls for commands ([CommandReboot], [CommandPoweroff]).
//
// The JSON names and values here are what agents already built send and expect: they do not
// change.
package agentwire

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
	// MaxJSON bounds a JSON request body.
	MaxJSON = 1 << 20
	// MaxFrame bounds one compressed chunk: zstd never expands data by more than a little.
	MaxFrame = manifest.MaxChunkSize + manifest.MaxChunkSize/64 + 1024
	// MaxFramesQuery is the most chunk ids one frames request may name: its answer is at
	// most MaxFramesQuery records of at most MaxFrame bytes each.
	MaxFramesQuery = 256
)

// Kind is what a task does.
type Kind string

// Task kinds.
const (
	// KindCapture reads a terminal's disk into a new version of an image.
	KindCapture Kind = "capture"
	// KindDeploy writes a version to a terminal's disk.
	KindDeploy Kind = "deploy"
	// KindUpdate writes a version to a terminal's disk that holds an ancestor of it
	// (TaskInfo.Base): only the chunks whose ids differ between the two are fetched, written
	// and read back.
	KindUpdate Kind = "update"
	// KindProbe boots a terminal into a version of the in-memory OS (its boot script names
	// it) only for its agent to say which one it booted (Done.BootEnv) and its own release
	// (Done.AgentVersion); the terminal then boots its own disk again. It touches no disk: a
	// rollout of a new in-memory OS tries it on one canary terminal first.
	KindProbe Kind = "probe"
)

// Writes reports whether a task of kind k writes the terminal's disk (a deploy or an update).
func (k Kind) Writes() bool { return k == KindDeploy || k == KindUpdate }

// Action is a terminal's boot action: boot its own disk, or run a task of that kind.
type Action string

// Boot actions.
const (
	// ActionLocal boots the terminal's own disk: the agent has no task.
	ActionLocal Action = "local"
	// ActionCapture and ActionDeploy run a task of that kind.
	ActionCapture = Action(KindCapture)
	ActionDeploy  = Action(KindDeploy)
	ActionUpdate  = Action(KindUpdate)
	ActionProbe   = Action(KindProbe)
)

// Task returns the task kind an action runs, and false for ActionLocal or an unknown action.
func (a Action) Task() (Kind, bool) {
	switch a {
	case ActionCapture:
		return KindCapture, true
	case ActionDeploy:
		return KindDeploy, true
	case ActionUpdate:
		return KindUpdate, true
	case ActionProbe:
		return KindProbe, true
	}
	return "", false
}

// Command is what a region tells an idle agent to do.
type Command string

// Commands.
const (
	CommandReboot   Command = "reboot"
	CommandPoweroff Command = "poweroff"
)

// Phase is the part of its task an agent is in, as its progress reports say.
type Phase string

// Progress phases.
const (
	PhaseStarting  Phase = "starting"  // the task was read, no disk work yet
	PhaseReading   Phase = "reading"   // a capture reads, names and uploads chunks
	PhaseUploading Phase = "uploading" // accepted from agents; the agent reports uploads under PhaseReading
	PhaseWriting   Phase = "writing"   // a deploy writes the disk
	PhaseVerifying Phase = "verifying" // a deploy reads the disk back
)

// Known reports whether p is a phase of this protocol.
func (p Phase) Known() bool {
	switch p {
	case PhaseStarting, PhaseReading, PhaseUploading, PhaseWriting, PhaseVerifying:
		return true
	}
	return false
}

// BootRequest is what an agent says when it starts.
type BootRequest struct {
	MAC          string `json:"mac"`
	Disk         string `json:"disk,omitempty"`      // the device (or file) it would capture or write
	DiskSize     int64  `json:"disk_size,omitempty"` // in bytes; 0 if it has no disk
	AgentVersion string `json:"agent_version,omitempty"`
	// BootToken is the task token the terminal's iPXE script put on the kernel command line
	// (tms.token); empty for an agent started otherwise.
	BootToken string `json:"boot_token,omitempty"`
	// BootEnv is the version of the in-memory OS the agent runs in, as its kernel command line
	// says (tms.bootenv); empty for one booted from the region's plain boot directory.
	BootEnv string `json:"bootenv,omitempty"`
}

// BootReply is the agent's boot action.
type BootReply struct {
	Action Action `json:"action"`

	Task  string `json:"task,omitempty"`  // the task's id
	Token string `json:"token,omitempty"` // the secret for this boot's task requests
	// Servers are the region's other healthy servers' endpoints (ServersField): where the
	// agent carries on if the server it talks to stops answering.
	Servers []string `json:"servers,omitempty"`
}

// TaskInfo describes the task an agent's token opens.
type TaskInfo struct {
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	// Image is the image name a capture publishes under.
	Image string `json:"image,omitempty"`
	// Version is the version a deploy or an update writes.
	Version string `json:"version,omitempty"`
	// Base is the version an update's terminal holds (the region's record of it): the agent
	// reads its manifest (GET /v1/agent/task/base), checks it, and writes only the chunks whose
	// ids differ. BaseSignature and BaseSigner are central's signature of it, when the region
	// has one.
	Base          string `json:"base,omitempty"`
	BaseSignature []byte `json:"base_signature,omitempty"`
	BaseSigner    string `json:"base_signer,omitempty"`
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
	// Swarm says the region runs a swarm for this version (several of its terminals write it
	// at once): the agent asks the region which peer to fetch each chunk from (POST
	// /v1/agent/task/swarm) and serves the chunks it holds to the other members.
	Swarm bool `json:"swarm,omitempty"`
	// Servers are the region's other healthy servers' endpoints, as in BootReply.
	Servers []string `json:"servers,omitempty"`
}

// MissingRequest asks which chunks the region lacks.
type MissingRequest struct {
	Chunks []manifest.ID `json:"chunks"`
}

// FramesRequest asks for the stored (zstd) frames of chunks of the version a deploy or update
// writes, many in one request (POST /v1/agent/task/frames): 1 to MaxFramesQuery ids, each a
// chunk of that version; an id may be named more than once. The answer
// (Content-Type FramesType) is one record of the chunk batch format (AppendBatch) per id, in
// the order asked, streamed as the region reads them from its store; ReadFrames reads it.
type FramesRequest struct {
	Chunks []manifest.ID `json:"chunks"`
}

// FramesType is the Content-Type of a frames answer.
const FramesType = "application/vnd.tms.frames"

// MissingReply lists them.
type MissingReply struct {
	Missing []manifest.ID `json:"missing"`
}

// Progress is an agent's progress report.
type Progress struct {
	Phase Phase `json:"phase"`
	Done  int64 `json:"done"`  // bytes of the disk handled
	Total int64 `json:"total"` // bytes of the disk
	// SentBytes is how many compressed chunk bytes a capture has uploaded.
	SentBytes int64 `json:"sent_bytes,omitempty"`
	// FetchedBytes is how many chunk bytes (decompressed and checked) a deploy has fetched.
	FetchedBytes int64 `json:"fetched_bytes,omitempty"`
	// MovedBytes is the one of the two the task moves, as agents built before SentBytes and
	// FetchedBytes report it (and agents still send it, for regions built before). Read
	// SentBytes and FetchedBytes; a region fills them from MovedBytes with FillBytes.
	MovedBytes int64 `json:"moved_bytes"`
}

// FillBytes sets SentBytes or FetchedBytes, by the task's kind, from the MovedBytes of an agent
// that sends only that.
func (p *Progress) FillBytes(kind Kind) {
	if p.SentBytes != 0 || p.FetchedBytes != 0 {
		return
	}
	switch kind {
	case KindCapture:
		p.SentBytes = p.MovedBytes
	case KindDeploy, KindUpdate:
		p.FetchedBytes = p.MovedBytes
	}
}

// Done is an agent's report that its task ended. A deploy or update that succeeded reports what
// it wrote and Verified true; a task that failed reports Error.
type Done struct {
	Error        string `json:"error,omitempty"`
	Written      int64  `json:"written,omitempty"`
	WrittenBytes int64  `json:"written_bytes,omitempty"`
	Skipped      int64  `json:"skipped,omitempty"`
	Verified     bool   `json:"verified,omitempty"`
	// FetchedBytes is how many chunk bytes (decompressed and checked) the task fetched
	// (agents built before it leave it out).
	FetchedBytes int64 `json:"fetched_bytes,omitempty"`
	// BootEnv and AgentVersion are what a probe reports: the in-memory OS version the
	// terminal booted (its kernel command line's tms.bootenv) and the agent's release.
	BootEnv      string `json:"bootenv,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// MaxAgentVersion bounds the agent release a probe reports.
const MaxAgentVersion = 128

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
	FetchedBytes int64  `json:"fetched_bytes,omitempty"`
	// BootEnv and AgentVersion are a probe's report (Done).
	BootEnv      string `json:"bootenv,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// CommandReply is what a long-polling agent is told to do; Command is empty when the poll timed
// out.
type CommandReply struct {
	Command Command `json:"command,omitempty"`
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

// ErrFrames marks a frames answer that is not what was asked for.
var ErrFrames = errors.New("malformed frames answer")

// ReadFrames reads the answer to a FramesRequest for ids from r: exactly one record per id, in
// the order of ids, and nothing after the last. For each record it calls buf for a slice of at
// least the frame's length to read the frame into, then fn with the id's index in ids and the
// frame (buf's slice, cut to length). A record for another id, an empty frame or one over
// MaxFrame, a record cut short, a missing record and bytes past the last are ErrFrames; an
// error reading r (a deadline, a reset) is returned as is, and so is fn's.
func ReadFrames(r io.Reader, ids []manifest.ID, buf func(size int) []byte, fn func(i int, frame []byte) error) error {
	var head [manifest.IDLen + 4]byte
	for i, want := range ids {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return fmt.Errorf("%w: it ends after %d of %d records", ErrFrames, i, len(ids))
			}
			return err
		}
		var id manifest.ID
		copy(id[:], head[:manifest.IDLen])
		if id != want {
			return fmt.Errorf("%w: record %d is chunk %s, chunk %s was asked for", ErrFrames, i, id.Short(), want.Short())
		}
		size := int64(binary.BigEndian.Uint32(head[manifest.IDLen:]))
		if size == 0 || size > MaxFrame {
			return fmt.Errorf("%w: record %d (chunk %s) announces a frame of %d bytes; want 1 to %d", ErrFrames, i, id.Short(), size, MaxFrame)
		}
		b := buf(int(size))
		if len(b) < int(size) {
			return fmt.Errorf("record %d (chunk %s): a buffer of %d bytes for a frame of %d", i, id.Short(), len(b), size)
		}
		b = b[:size]
		if _, err := io.ReadFull(r, b); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return fmt.Errorf("%w: record %d (chunk %s) is cut short", ErrFrames, i, id.Short())
			}
			return err
		}
		if err := fn(i, b); err != nil {
			return err
		}
	}
	var extra [1]byte
	switch n, err := io.ReadFull(r, extra[:]); {
	case n > 0:
		return fmt.Errorf("%w: bytes follow the last of %d records", ErrFrames, len(ids))
	case err == io.EOF:
		return nil
	default:
		return err
	}
}
