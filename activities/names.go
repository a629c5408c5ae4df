package activities

// The names of the activities whose heartbeats `tms task` reads: the Region methods' names,
// under which workers register them (RegisterActivity of a *Region) and histories record them. A
// test checks each is still a method of Region.
const (
	NameWaitForAgent  = "WaitForAgent"
	NamePullFromPeer  = "PullFromPeer"
	NamePullFromRelay = "PullFromRelay"
	NamePushToRelay   = "PushToRelay"
)
