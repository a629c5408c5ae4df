package auth

import (
	"context"
	"errors"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	schedulepb "go.temporal.io/api/schedule/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	updatepb "go.temporal.io/api/update/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"tms/activities"
	"tms/workflows"
)

func attrs(kv ...string) *commonpb.SearchAttributes {
	sa := &commonpb.SearchAttributes{IndexedFields: map[string]*commonpb.Payload{}}
	for i := 0; i < len(kv); i += 2 {
		p, err := converter.GetDefaultDataConverter().ToPayload(kv[i+1])
		if err != nil {
			panic(err)
		}
		sa.IndexedFields[kv[i]] = p
	}
	return sa
}

func taskAttrs(region, kind, by string) *commonpb.SearchAttributes {
	return attrs(workflows.AttrRegion.GetName(), region, workflows.AttrKind.GetName(), kind, workflows.AttrStartedBy.GetName(), by)
}

func queue(name string) *taskqueuepb.TaskQueue { return &taskqueuepb.TaskQueue{Name: name} }

func start(region, kind, by, q string) *workflowservice.StartWorkflowExecutionRequest {
	return &workflowservice.StartWorkflowExecutionRequest{Namespace: "default", WorkflowId: "deploy/x", SearchAttributes: taskAttrs(region, kind, by), TaskQueue: queue(q)}
}

func update(id, name string) *workflowservice.UpdateWorkflowExecutionRequest {
	return &workflowservice.UpdateWorkflowExecutionRequest{WorkflowExecution: &commonpb.WorkflowExecution{WorkflowId: id},
		Request: &updatepb.Request{Input: &updatepb.Input{Name: name}}}
}

func schedule(id, region, by string) *workflowservice.CreateScheduleRequest {
	return &workflowservice.CreateScheduleRequest{ScheduleId: id, Schedule: &schedulepb.Schedule{Action: &schedulepb.ScheduleAction{
		Action: &schedulepb.ScheduleAction_StartWorkflow{StartWorkflow: &workflowpb.NewWorkflowExecutionInfo{
			WorkflowId: "deploy/x", TaskQueue: queue(activities.RegionQueue(region)), SearchAttributes: taskAttrs(region, workflows.TaskDeploy, by)}}}}}
}

// fakeLookup knows a few tasks' and schedules' regions.
type fakeLookup struct{}

func (fakeLookup) WorkflowRegion(_ context.Context, _, id string) (string, error) {
	switch id {
	case "deploy/region-a/x":
		return "region-a", nil
	case "deploy/region-b/x":
		return "region-b", nil
	case "admin/untagged":
		return "", nil
	}
	return "", errors.New("workflow not found")
}

func (fakeLookup) ScheduleRegion(_ context.Context, _, id string) (string, error) {
	return map[string]string{"nightly-a": "region-a", "nightly-b": "region-b"}[id], nil
}

const ws = "/temporal.api.workflowservice.v1.WorkflowService/"

func TestDecide(t *testing.T) {
	admin := &Claims{Subject: "root", Role: RoleAdmin}
	alice := &Claims{Subject: "alice", Role: RoleOperator, Regions: []string{"region-a"}}
	vic := &Claims{Subject: "vic", Role: RoleViewer}
	vera := &Claims{Subject: "vera", Role: RoleViewer, Regions: []string{"region-a"}}
	central := &Claims{Subject: "central", Role: RoleWorker}
	room := &Claims{Subject: "region:region-a", Role: RoleWorker, Regions: []string{"region-a"}}
	exec := func(id string) *commonpb.WorkflowExecution { return &commonpb.WorkflowExecution{WorkflowId: id} }
	cases := []struct {
		name   string
		c      *Claims
		tokErr error
		api    string
		req    any
		want   string // "" = allowed, else a part of the refusal
	}{
		{"no token: health check", nil, nil, "/grpc.health.v1.Health/Check", nil, ""},
		{"no token: system info", nil, nil, ws + "GetSystemInfo", &workflowservice.GetSystemInfoRequest{}, ""},
		{"no token: a listing", nil, nil, ws + "ListWorkflowExecutions", &workflowservice.ListWorkflowExecutionsRequest{}, "no tms token: run tms login"},
		{"refused token", nil, ErrToken, ws + "ListWorkflowExecutions", nil, "token refused"},
		{"expired token", nil, &ExpiredError{At: t0}, ws + "ListWorkflowExecutions", nil, "your login expired at"},

		{"admin: namespace admin", admin, nil, ws + "RegisterNamespace", nil, ""},
		{"admin: search attributes", admin, nil, "/temporal.api.operatorservice.v1.OperatorService/AddSearchAttributes", nil, ""},

		{"worker: completes tasks", central, nil, ws + "RespondWorkflowTaskCompleted", nil, ""},
		{"worker: lists search attributes", central, nil, "/temporal.api.operatorservice.v1.OperatorService/ListSearchAttributes", nil, ""},
		{"worker: no search attribute admin", central, nil, "/temporal.api.operatorservice.v1.OperatorService/AddSearchAttributes", nil, "are for admins"},
		{"worker: no namespace admin", central, nil, ws + "UpdateNamespace", nil, "are for admins"},
		{"worker: no admin service", central, nil, "/temporal.server.api.adminservice.v1.AdminService/DescribeCluster", nil, "are for admins"},
		{"region worker: polls its queue", room, nil, ws + "PollWorkflowTaskQueue", &workflowservice.PollWorkflowTaskQueueRequest{TaskQueue: queue("region.region-a")}, ""},
		{"region worker: polls its sticky queue", room, nil, ws + "PollWorkflowTaskQueue", &workflowservice.PollWorkflowTaskQueueRequest{TaskQueue: &taskqueuepb.TaskQueue{Name: "host:1234", Kind: enumspb.TASK_QUEUE_KIND_STICKY, NormalName: "region.region-a"}}, ""},
		{"region worker: another region's activities", room, nil, ws + "PollActivityTaskQueue", &workflowservice.PollActivityTaskQueueRequest{TaskQueue: queue("region.region-b")}, `may poll the queues of region-a only, not "region.region-b"`},
		{"region worker: central's queue", room, nil, ws + "PollWorkflowTaskQueue", &workflowservice.PollWorkflowTaskQueueRequest{TaskQueue: queue("central")}, "not \"central\""},

		{"viewer: lists", vic, nil, ws + "ListWorkflowExecutions", &workflowservice.ListWorkflowExecutionsRequest{}, ""},
		{"viewer: describes a task", vic, nil, ws + "DescribeWorkflowExecution", &workflowservice.DescribeWorkflowExecutionRequest{Execution: exec("deploy/region-b/x")}, ""},
		{"viewer: reads a region's service", vic, nil, ws + "UpdateWorkflowExecution", update(workflows.RegionServiceID("region-b"), workflows.UpdateRead), ""},
		{"viewer: reads central's service", vera, nil, ws + "UpdateWorkflowExecution", update(workflows.CentralServiceID, workflows.UpdateRead), ""},
		{"viewer: waits for an update's outcome", vic, nil, ws + "PollWorkflowExecutionUpdate", &workflowservice.PollWorkflowExecutionUpdateRequest{}, ""},
		{"viewer with regions: reads a granted region", vera, nil, ws + "UpdateWorkflowExecution", update(workflows.RegionServiceID("region-a"), workflows.UpdateRead), ""},
		{"viewer with regions: reads another region", vera, nil, ws + "UpdateWorkflowExecution", update(workflows.RegionServiceID("region-b"), workflows.UpdateRead), "viewer vera may read region region-a only, not region-b"},
		{"viewer with regions: queries another region", vera, nil, ws + "QueryWorkflow", &workflowservice.QueryWorkflowRequest{Execution: exec(workflows.RegionServiceID("region-b"))}, "not region-b"},
		{"viewer: changes inventory", vic, nil, ws + "UpdateWorkflowExecution", update(workflows.RegionServiceID("region-a"), workflows.UpdateChange), "viewer vic may only read, not UpdateWorkflowExecution"},
		{"viewer: starts a task", vic, nil, ws + "StartWorkflowExecution", start("region-a", workflows.TaskDeploy, "vic", "region.region-a"), "viewer vic may only read, not StartWorkflowExecution"},
		{"viewer: cancels", vic, nil, ws + "RequestCancelWorkflowExecution", &workflowservice.RequestCancelWorkflowExecutionRequest{WorkflowExecution: exec("deploy/region-a/x")}, "may only read"},
		{"viewer: lists search attributes (the UI's filters)", vic, nil, "/temporal.api.operatorservice.v1.OperatorService/ListSearchAttributes", nil, ""},
		{"viewer: adds search attributes", vic, nil, "/temporal.api.operatorservice.v1.OperatorService/AddSearchAttributes", nil, "administration is for admins"},
		{"operator: deletes a namespace", alice, nil, "/temporal.api.operatorservice.v1.OperatorService/DeleteNamespace", nil, "administration is for admins"},
		{"operator: update-with-start in a granted region", alice, nil, ws + "ExecuteMultiOperation", multi(start("region-a", workflows.TaskDeploy, "alice", "region.region-a"), "deploy/x"), ""},
		{"operator: update-with-start in another region", alice, nil, ws + "ExecuteMultiOperation", multi(start("region-b", workflows.TaskDeploy, "alice", "region.region-b"), "deploy/x"), "not region-b"},
		{"operator: update-with-start updating another workflow", alice, nil, ws + "ExecuteMultiOperation", multi(start("region-a", workflows.TaskDeploy, "alice", "region.region-a"), "deploy/region-b/x"), "must update the workflow it starts"},
		{"operator: multi-operation without a start", alice, nil, ws + "ExecuteMultiOperation", &workflowservice.ExecuteMultiOperationRequest{}, "update-with-start only"},

		{"operator: starts in a granted region", alice, nil, ws + "StartWorkflowExecution", start("region-a", workflows.TaskDeploy, "alice", "region.region-a"), ""},
		{"operator: shares to a granted region on central's queue", alice, nil, ws + "StartWorkflowExecution", start("region-a", workflows.TaskShare, "alice", "central"), ""},
		{"operator: starts in another region", alice, nil, ws + "StartWorkflowExecution", start("region-b", workflows.TaskDeploy, "alice", "region.region-b"), "operator alice may act in region-a only, not region-b"},
		{"operator: a granted region's tag on another region's queue", alice, nil, ws + "StartWorkflowExecution", start("region-a", workflows.TaskDeploy, "alice", "region.region-b"), `not "region.region-b"`},
		{"operator: not a task kind", alice, nil, ws + "StartWorkflowExecution", start("region-a", "admin", "alice", "region.region-a"), "may start tasks only"},
		{"operator: a plan, even tagged with a granted region", alice, nil, ws + "StartWorkflowExecution", start("region-a", "plan", "alice", "central"), "may not make plans"},
		{"operator: no region tag", alice, nil, ws + "StartWorkflowExecution", &workflowservice.StartWorkflowExecutionRequest{TaskQueue: queue("central")}, "has no TmsRegion"},
		{"operator: started by someone else", alice, nil, ws + "StartWorkflowExecution", start("region-a", workflows.TaskDeploy, "bob", "region.region-a"), `TmsStartedBy must be "alice", not "bob"`},
		{"operator: signal-with-start in another region", alice, nil, ws + "SignalWithStartWorkflowExecution", &workflowservice.SignalWithStartWorkflowExecutionRequest{SearchAttributes: taskAttrs("region-b", workflows.TaskDeploy, "alice"), TaskQueue: queue("region.region-b")}, "not region-b"},
		{"operator: schedules in a granted region", alice, nil, ws + "CreateSchedule", schedule("nightly", "region-a", "schedule:nightly"), ""},
		{"operator: schedule started by themself", alice, nil, ws + "CreateSchedule", schedule("nightly", "region-a", "alice"), `must be "schedule:nightly"`},
		{"operator: schedules in another region", alice, nil, ws + "CreateSchedule", schedule("nightly", "region-b", "schedule:nightly"), "not region-b"},
		{"operator: pauses a granted region's schedule", alice, nil, ws + "PatchSchedule", &workflowservice.PatchScheduleRequest{ScheduleId: "nightly-a"}, ""},
		{"operator: pauses another region's schedule", alice, nil, ws + "PatchSchedule", &workflowservice.PatchScheduleRequest{ScheduleId: "nightly-b"}, "not region-b"},
		{"operator: deletes an untagged schedule", alice, nil, ws + "DeleteSchedule", &workflowservice.DeleteScheduleRequest{ScheduleId: "other"}, "schedule other has no TmsRegion"},
		{"operator: changes a granted region's inventory", alice, nil, ws + "UpdateWorkflowExecution", update(workflows.RegionServiceID("region-a"), workflows.UpdateChange), ""},
		{"operator: changes another region's inventory", alice, nil, ws + "UpdateWorkflowExecution", update(workflows.RegionServiceID("region-b"), workflows.UpdateChange), "operator alice may act in region-a only, not region-b"},
		{"operator: another update on a region's service", alice, nil, ws + "UpdateWorkflowExecution", update(workflows.RegionServiceID("region-a"), "shutdown"), `not "shutdown"`},
		{"operator: changes central's service", alice, nil, ws + "UpdateWorkflowExecution", update(workflows.CentralServiceID, workflows.UpdateChange), "may only read central's service"},
		{"operator: cancels a granted region's task", alice, nil, ws + "RequestCancelWorkflowExecution", &workflowservice.RequestCancelWorkflowExecutionRequest{WorkflowExecution: exec("deploy/region-a/x")}, ""},
		{"operator: terminates another region's task", alice, nil, ws + "TerminateWorkflowExecution", &workflowservice.TerminateWorkflowExecutionRequest{WorkflowExecution: exec("deploy/region-b/x")}, "not region-b"},
		{"operator: signals an untagged workflow", alice, nil, ws + "SignalWorkflowExecution", &workflowservice.SignalWorkflowExecutionRequest{WorkflowExecution: exec("admin/untagged")}, "has no TmsRegion"},
		{"operator: a workflow that cannot be looked up", alice, nil, ws + "DeleteWorkflowExecution", &workflowservice.DeleteWorkflowExecutionRequest{WorkflowExecution: exec("gone")}, "cannot check the region"},
		{"operator: terminates a service workflow", alice, nil, ws + "TerminateWorkflowExecution", &workflowservice.TerminateWorkflowExecutionRequest{WorkflowExecution: exec(workflows.RegionServiceID("region-a"))}, "that is for admins"},
		{"operator: resets", alice, nil, ws + "ResetWorkflowExecution", &workflowservice.ResetWorkflowExecutionRequest{WorkflowExecution: exec("deploy/region-a/x")}, "may not call ResetWorkflowExecution"},
		{"operator: batch", alice, nil, ws + "StartBatchOperation", &workflowservice.StartBatchOperationRequest{}, "may not call StartBatchOperation"},
		{"operator: namespace admin", alice, nil, ws + "UpdateNamespace", &workflowservice.UpdateNamespaceRequest{}, "may not call UpdateNamespace"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(context.Background(), c.c, c.tokErr, Call{API: c.api, Namespace: "default", Request: c.req}, fakeLookup{})
			if c.want == "" {
				if !d.Allow {
					t.Fatalf("refused: %s", d.Reason)
				}
				return
			}
			if d.Allow || !strings.Contains(d.Reason, c.want) {
				t.Fatalf("allow %v, reason %q; want refused saying %q", d.Allow, d.Reason, c.want)
			}
		})
	}
}

// The policy spells task queues as activities does.
func TestQueueNames(t *testing.T) {
	if activities.RegionQueue("r") != regionQueuePrefix+"r" || activities.CentralQueue != centralQueue {
		t.Fatal("auth's task queue names differ from activities'")
	}
}

func multi(s *workflowservice.StartWorkflowExecutionRequest, updateID string) *workflowservice.ExecuteMultiOperationRequest {
	return &workflowservice.ExecuteMultiOperationRequest{Operations: []*workflowservice.ExecuteMultiOperationRequest_Operation{
		{Operation: &workflowservice.ExecuteMultiOperationRequest_Operation_StartWorkflow{StartWorkflow: s}},
		{Operation: &workflowservice.ExecuteMultiOperationRequest_Operation_UpdateWorkflow{UpdateWorkflow: update(updateID, "x")}},
	}}
}

// FuzzDecide: whatever the API name and search attributes, a viewer starts nothing and an
// operator acts in region-a only.
func FuzzDecide(f *testing.F) {
	f.Add("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution", `"region-a"`, `"deploy"`, `"alice"`, "region.region-a")
	f.Add("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution", `"region-b"`, `"deploy"`, `"alice"`, "region.region-b")
	f.Add("/temporal.api.workflowservice.v1.WorkflowService/ListWorkflowExecutions", `["region-a"]`, `1`, `null`, "central")
	f.Fuzz(func(t *testing.T, api, region, kind, by, queue string) {
		raw := func(s string) *commonpb.Payload {
			return &commonpb.Payload{Metadata: map[string][]byte{"encoding": []byte("json/plain")}, Data: []byte(s)}
		}
		req := &workflowservice.StartWorkflowExecutionRequest{TaskQueue: queue_(queue), SearchAttributes: &commonpb.SearchAttributes{IndexedFields: map[string]*commonpb.Payload{
			workflows.AttrRegion.GetName(): raw(region), workflows.AttrKind.GetName(): raw(kind), workflows.AttrStartedBy.GetName(): raw(by)}}}
		alice := &Claims{Subject: "alice", Role: RoleOperator, Regions: []string{"region-a"}}
		d := Decide(context.Background(), alice, nil, Call{API: api, Request: req}, fakeLookup{})
		if d.Allow && shortAPI(api) == "StartWorkflowExecution" && (KeywordAttr(req.SearchAttributes, "TmsRegion") != "region-a" || KeywordAttr(req.SearchAttributes, "TmsStartedBy") != "alice") {
			t.Fatalf("operator alice allowed a start %q/%q/%q on %q", region, kind, by, queue)
		}
		vic := &Claims{Subject: "vic", Role: RoleViewer}
		if d := Decide(context.Background(), vic, nil, Call{API: api, Request: req}, fakeLookup{}); d.Allow && shortAPI(api) == "StartWorkflowExecution" {
			t.Fatalf("viewer allowed %s", api)
		}
	})
}

func queue_(name string) *taskqueuepb.TaskQueue { return &taskqueuepb.TaskQueue{Name: name} }
