// Package workflows holds the durable workflows of tms: sharing an image with a region,
// capturing a terminal's disk, deploying an image to terminals. Their activities live in
// package activities and run on the central worker (task queue "central") or on a region's
// worker ("region.<id>").
//
// Every task workflow tags itself for listings (tagTask, tasktags.go) and begins with
// awaitStart (start.go): a task asked for later waits on a durable timer and, until it starts,
// takes the "modify" Update that changes its start time, targets and image.
//
// Workflow code is replayed from history after every crash, so it must be deterministic:
//
//   - no time.Now, time.Sleep or timers from package time: use workflow.Now, workflow.Sleep,
//     workflow.NewTimer;
//   - no goroutines, channels or select: use workflow.Go, workflow.Channel, workflow.Selector;
//   - no ranging over maps (their order is random): sort keys first;
//   - no randomness, no I/O, no reading configuration or the environment: do it in an
//     activity, or once in workflow.SideEffect;
//   - a change to a running workflow's logic goes behind workflow.GetVersion.
//
// Every workflow and activity takes one struct and returns one struct, so fields can be added
// without breaking histories. Activities are named through a nil pointer of their struct:
//
//	var c *activities.Central
//	workflow.ExecuteActivity(ctx, c.LocateVersion, in)
//
// No activity is ever called once per chunk or block: one activity moves many chunks and
// heartbeats its position.
package workflows
