package workflows

// Phase is where a workflow, or one terminal of a deploy, stands: the Phase of the progress its
// "progress" query answers (CaptureProgress, DeployProgress, TerminalProgress, ShareProgress).
type Phase string

// Phases of the terminal task (DeployTerminal, a capture's terminal part, each terminal of a
// DeployImage).
const (
	PhaseQueued    Phase = "queued"    // DeployImage: not started yet (the concurrency limit)
	PhasePreparing Phase = "preparing" // the task and the terminal's boot action are being set
	PhaseRebooting Phase = "rebooting" // the terminal is told to boot from the network
	PhaseWaiting   Phase = "waiting"   // the agent works; its reports are WaitForAgent's heartbeats
	PhaseFinishing Phase = "finishing" // the terminal goes back to booting its own disk
	PhaseDeploying Phase = "deploying" // DeployImage: the terminal's DeployTerminal runs
	PhaseUpdating  Phase = "updating"  // UpdateImage: the terminal's UpdateTerminal runs
	PhaseDone      Phase = "done"
	PhaseFailed    Phase = "failed" // Error says why
)

// Phases of the whole-image steps.
const (
	PhaseScheduled   Phase = "scheduled"   // a task asked for later waits for its start time (StartAt)
	PhaseResolving   Phase = "resolving"   // DeployImage: the group and image are being resolved
	PhaseSharing     Phase = "sharing"     // DeployImage: ShareImage brings the image to the region
	PhaseDeciding    Phase = "deciding"    // UpdateImage: each terminal's decision (stop, incremental, full)
	PhaseRegistering Phase = "registering" // CaptureImage: the new version goes into central's catalog
	PhaseSigning     Phase = "signing"     // CaptureImage: central's signature is stored beside it
	PhaseLocating    Phase = "locating"    // ShareImage: central finds verified copies
	PhasePeerPull    Phase = "peer-pull"   // ShareImage: the target pulls from a peer region
	PhaseRelay       Phase = "relay"       // ShareImage: the source pushes to central storage, the target pulls
	PhaseRecording   Phase = "recording"   // ShareImage: the new location goes into the catalog
)

// SharePath is how ShareImage brought a version to its target.
type SharePath string

// Share paths.
const (
	PathLocal SharePath = "local" // the target held it already
	PathPeer  SharePath = "peer"  // pulled from a peer region
	PathRelay SharePath = "relay" // relayed through central storage
)
