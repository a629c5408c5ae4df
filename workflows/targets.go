package workflows

import (
	"go.temporal.io/sdk/workflow"

	"tms/activities"
)

// resolveTargets turns a task's group or terminals into terminals (ResolveTerminals on the
// region's queue) and tags the task with their names, so that `tms task ls --terminal T` finds a
// group task by its members. Deploys, updates and power tasks start with it; tags are the
// task's, its StartAt left zero (the tags recorded histories carry).
func resolveTargets(ctx workflow.Context, tags TaskTags) ([]activities.TerminalRef, error) {
	var r *activities.Region
	var res activities.ResolveResult
	if err := workflow.ExecuteActivity(regionOptions(ctx, tags.Region), r.ResolveTerminals,
		activities.ResolveInput{Group: tags.Group, Terminals: tags.Terminals}).Get(ctx, &res); err != nil {
		return nil, err
	}
	tags.Terminals = make([]string, 0, len(res.Terminals))
	for _, t := range res.Terminals {
		tags.Terminals = append(tags.Terminals, name(t))
	}
	return res.Terminals, tagTask(ctx, tags)
}

// shareHere makes image local to region before a deploy or update writes it: a child
// ShareImage on central's queue, named after the calling task (ID/share).
func shareHere(ctx workflow.Context, region, image string) (ShareImageResult, error) {
	var res ShareImageResult
	share := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/share",
		TaskQueue:  activities.CentralQueue,
	})
	err := workflow.ExecuteChildWorkflow(share, ShareImage, ShareImageInput{Image: image, Target: region}).Get(ctx, &res)
	return res, err
}
