package activities

import (
	"errors"

	"go.temporal.io/sdk/temporal"
)

// ErrorType is the type of a Temporal application error that tms's activities and workflows end
// with. A type names what went wrong in words an admin (and the CLI) can act on; the message
// says the rest. Every type here is raised non-retryable: retrying cannot mend bad input, a
// missing object or a refusal. Failures that may pass (a store or peer that could not be
// reached) are returned as plain errors, and Temporal retries them under the activity's retry
// policy.
//
// The strings are recorded in workflow histories and read by clients: they never change.
//
//	return res, ErrBadVersion.New(err.Error(), err)
//	if ErrAgentFailed.Matches(err) { … }
//	RetryPolicy: &temporal.RetryPolicy{NonRetryableErrorTypes: NonRetryable(ErrBadInput, ErrConflict)}
type ErrorType string

// Bad input: a request that cannot be done as asked.
const (
	// ErrBadInput: a request is malformed (an unknown operation, a bad MAC, a task kind or
	// power command that does not exist, a version of another image).
	ErrBadInput ErrorType = "BadInput"
	// ErrBadImage: an image name or reference does not parse.
	ErrBadImage ErrorType = "BadImage"
	// ErrBadVersion: a version id does not parse, or a version's manifest is not valid.
	ErrBadVersion ErrorType = "BadVersion"
	// ErrBadRegion: a region's descriptor is not valid (its id, its data endpoint).
	ErrBadRegion ErrorType = "BadRegion"
	// ErrBadEndpoint: a peer's data endpoint is not a URL the region can pull from.
	ErrBadEndpoint ErrorType = "BadEndpoint"
)

// Nothing of that name: the request names something that does not exist where it was asked.
const (
	// ErrNotFound: an admin request names a terminal, group or task the region does not have.
	ErrNotFound ErrorType = "NotFound"
	// ErrUnknownTerminal: the region has no terminal of that name or MAC.
	ErrUnknownTerminal ErrorType = "UnknownTerminal"
	// ErrUnknownGroup: the region has no group of that name.
	ErrUnknownGroup ErrorType = "UnknownGroup"
	// ErrUnknownImage: the central catalog has no such image (or tag).
	ErrUnknownImage ErrorType = "UnknownImage"
	// ErrUnknownRegion: central has no region of that id.
	ErrUnknownRegion ErrorType = "UnknownRegion"
	// ErrUnknownTask: the region has no record of the terminal task waited for.
	ErrUnknownTask ErrorType = "UnknownTask"
	// ErrNotHere: the region asked does not hold the version (was it removed?).
	ErrNotHere ErrorType = "NotHere"
	// ErrNoSource: no region holds a verified copy of the image, so it cannot be shared.
	ErrNoSource ErrorType = "NoVerifiedCopy"
)

// Refusals: the request is well formed, and the region or central will not do it.
const (
	// ErrConflict: a name is taken, or the terminal already has another task.
	ErrConflict ErrorType = "Conflict"
	// ErrNotEnrolled: the terminal is known (it booted) but an admin has not enrolled it.
	ErrNotEnrolled ErrorType = "NotEnrolled"
	// ErrEmptyGroup: a group deploy names a group with no terminals.
	ErrEmptyGroup ErrorType = "EmptyGroup"
	// ErrDoesNotFit: the image needs a bigger disk than the terminal has.
	ErrDoesNotFit ErrorType = "DoesNotFit"
	// ErrNoRelay: a relay was asked of a region without relay storage.
	ErrNoRelay ErrorType = "NoRelay"
	// ErrNoSigningKey: central has no signing key, so it cannot register or grant.
	ErrNoSigningKey ErrorType = "NoSigningKey"
	// ErrUnsigned: the version has no signature by central; regions deploy only signed ones.
	ErrUnsigned ErrorType = "Unsigned"
	// ErrBadSignature: the version's signature does not verify with central's key.
	ErrBadSignature ErrorType = "BadSignature"
	// ErrSourceCorrupt: a peer or relay sent bytes that do not match their ids.
	ErrSourceCorrupt ErrorType = "SourceCorrupt"
	// ErrNoRoom: the region's store cannot take a version under its high-water mark even
	// after evicting everything nothing pins or holds; the message names what holds the space.
	ErrNoRoom ErrorType = "NoRoom"
	// ErrNoCanary: a bootenv rollout found no terminal of a region to try the new version on
	// (none enrolled, or all of them busy), or the one named cannot be.
	ErrNoCanary ErrorType = "NoCanary"
)

// Outcomes of a terminal's task and of whole workflows.
const (
	// ErrAgentFailed: the terminal's agent (or the region) gave up on its task; the message is
	// the agent's reason.
	ErrAgentFailed ErrorType = "AgentFailed"
	// ErrTerminalSilent: a terminal never reported for its task, however often it was asked
	// to boot (DeployTerminal, CaptureImage).
	ErrTerminalSilent ErrorType = "TerminalSilent"
	// ErrDeployFailed: a group deploy failed on every terminal (DeployImage).
	ErrDeployFailed ErrorType = "DeployFailed"
	// ErrUpdateFailed: an update failed on every terminal it had to write (UpdateImage).
	ErrUpdateFailed ErrorType = "UpdateFailed"
	// ErrCanaryFailed: a bootenv rollout's canary did not come back from the new version, or
	// came back with another one (BootEnvRollout); the message names the region, the
	// terminal and what happened.
	ErrCanaryFailed ErrorType = "CanaryFailed"
	// ErrShareFailed: no source could bring the image to the region (ShareImage).
	ErrShareFailed ErrorType = "ShareFailed"
	// ErrPowerFailed: a power command failed on every terminal (PowerTerminals).
	ErrPowerFailed ErrorType = "PowerFailed"
	// ErrNotReady: a pre-distribution plan's By passed with regions that do not hold its image
	// (PlanImage); the message names them and why.
	ErrNotReady ErrorType = "NotReady"
)

// New returns a non-retryable application error of type t with message msg; cause, if not nil,
// is wrapped, and details travel with the error (a workflow's partial result).
func (t ErrorType) New(msg string, cause error, details ...any) error {
	return temporal.NewNonRetryableApplicationError(msg, string(t), cause, details...)
}

// Matches reports whether err is, or wraps, an application error of type t.
func (t ErrorType) Matches(err error) bool {
	var ae *temporal.ApplicationError
	return errors.As(err, &ae) && ae.Type() == string(t)
}

// NonRetryable lists types for a RetryPolicy's NonRetryableErrorTypes.
func NonRetryable(types ...ErrorType) []string {
	s := make([]string, len(types))
	for i, t := range types {
		s[i] = string(t)
	}
	return s
}
