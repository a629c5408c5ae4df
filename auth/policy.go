package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"

	"tms/workflows"
)

// Call is one call to the Temporal frontend, as the authorizer sees it.
type Call struct {
	// API is the full gRPC method, like "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution".
	API       string
	Namespace string
	// Request is the typed request (nil for streams).
	Request any
}

// Decision is the policy's answer. Reason names the rule that decided, for the caller and the log.
type Decision struct {
	Allow  bool
	Reason string
}

// Lookup finds the region a running task or a schedule works in (its TmsRegion search
// attribute), for the rules on cancel, terminate, signal, pause... A task without one returns "".
type Lookup interface {
	WorkflowRegion(ctx context.Context, namespace, workflowID string) (string, error)
	ScheduleRegion(ctx context.Context, namespace, scheduleID string) (string, error)
}

const (
	workflowService = "/temporal.api.workflowservice.v1.WorkflowService/"
	operatorService = "/temporal.api.operatorservice.v1.OperatorService/"
)

// Always allowed, token or not: health checks and what a client asks before it says who it is.
var open = []string{
	"/grpc.health.v1.Health/Check",
	workflowService + "GetSystemInfo",
	workflowService + "GetClusterInfo",
}

// Namespace, search attribute and cluster administration: admin only (a worker neither).
var adminOnly = []string{
	workflowService + "RegisterNamespace",
	workflowService + "UpdateNamespace",
	workflowService + "DeprecateNamespace",
}

// Region task queue names, as activities.RegionQueue and activities.CentralQueue spell them.
const (
	regionQueuePrefix = "region."
	centralQueue      = "central"
)

// Decide applies tms's policy to a call by the holder of c (nil: no token). err is the reason a
// token was refused, if it was. lookup answers the rules that depend on an existing task or
// schedule's region.
func Decide(ctx context.Context, c *Claims, tokenErr error, call Call, lookup Lookup) Decision {
	if slices.Contains(open, call.API) {
		return allow("open to all")
	}
	if tokenErr != nil {
		var exp *ExpiredError
		if errors.As(tokenErr, &exp) {
			return deny(exp.Error())
		}
		return deny("token refused (" + tokenErr.Error() + "): run tms login")
	}
	if c == nil {
		return deny("no tms token: run tms login (" + shortAPI(call.API) + " needs one)")
	}
	api := shortAPI(call.API)
	switch c.Role {
	case RoleAdmin:
		return allow("admin " + c.Subject + " may do everything")
	case RoleWorker:
		return decideWorker(c, call)
	case RoleViewer, RoleOperator:
		if strings.HasPrefix(call.API, operatorService) && isOperatorRead(call.API) {
			// The UI lists search attributes for its filters.
			return allow(string(c.Role) + " " + c.Subject + " may read")
		}
		if !strings.HasPrefix(call.API, workflowService) {
			return deny(fmt.Sprintf("%s %s may not call %s: administration is for admins", c.Role, c.Subject, api))
		}
		if d, ok := decideRead(c, api, call.Request); ok {
			return d
		}
		if c.Role == RoleViewer {
			return deny(fmt.Sprintf("viewer %s may only read, not %s", c.Subject, api))
		}
		return decideOperator(ctx, c, api, call, lookup)
	}
	return deny(fmt.Sprintf("role %q may do nothing", c.Role))
}

func allow(why string) Decision { return Decision{Allow: true, Reason: why} }
func deny(why string) Decision  { return Decision{Reason: why} }

// shortAPI is the method name without its service.
func shortAPI(api string) string {
	if i := strings.LastIndexByte(api, '/'); i >= 0 {
		return api[i+1:]
	}
	return api
}

func decideWorker(c *Claims, call Call) Decision {
	if slices.Contains(adminOnly, call.API) || strings.HasPrefix(call.API, operatorService) && !isOperatorRead(call.API) ||
		!strings.HasPrefix(call.API, workflowService) && !strings.HasPrefix(call.API, operatorService) {
		return deny(fmt.Sprintf("worker %s may not call %s: namespace, search attribute and cluster administration are for admins", c.Subject, shortAPI(call.API)))
	}
	if len(c.Regions) == 0 {
		return allow("worker " + c.Subject)
	}
	var tq *taskqueuepb.TaskQueue
	switch r := call.Request.(type) {
	case *workflowservice.PollWorkflowTaskQueueRequest:
		tq = r.GetTaskQueue()
	case *workflowservice.PollActivityTaskQueueRequest:
		tq = r.GetTaskQueue()
	case *workflowservice.PollNexusTaskQueueRequest:
		tq = r.GetTaskQueue()
	default:
		return allow("worker " + c.Subject)
	}
	name := tq.GetName()
	if tq.GetKind() == enumspb.TASK_QUEUE_KIND_STICKY {
		name = tq.GetNormalName()
	}
	for _, r := range c.Regions {
		if name == regionQueuePrefix+r {
			return allow("worker " + c.Subject + " polls its region's queue")
		}
	}
	return deny(fmt.Sprintf("worker %s may poll the queues of %s only, not %q", c.Subject, strings.Join(c.Regions, ", "), clip(name)))
}

func isOperatorRead(api string) bool {
	m := shortAPI(api)
	return strings.HasPrefix(m, "List") || strings.HasPrefix(m, "Get")
}

// isRead reports whether a WorkflowService method only reads.
func isRead(api string) bool {
	for _, p := range []string{"List", "Count", "Describe", "Get", "Query", "Scan"} {
		if strings.HasPrefix(api, p) {
			return true
		}
	}
	// The SDK waits for an update's outcome with this: it reads, changes nothing.
	return api == "PollWorkflowExecutionUpdate"
}

// executionID is the workflow a request names, if any.
func executionID(req any) string {
	type execution interface {
		GetExecution() *commonpb.WorkflowExecution
	}
	type workflowExecution interface {
		GetWorkflowExecution() *commonpb.WorkflowExecution
	}
	switch r := req.(type) {
	case execution:
		return r.GetExecution().GetWorkflowId()
	case workflowExecution:
		return r.GetWorkflowExecution().GetWorkflowId()
	case *workflowservice.PollWorkflowExecutionUpdateRequest:
		return r.GetUpdateRef().GetWorkflowExecution().GetWorkflowId()
	}
	return ""
}

// decideRead decides reads (the viewer's rules, which an operator has too). ok false: not a read.
func decideRead(c *Claims, api string, req any) (Decision, bool) {
	if api == "UpdateWorkflowExecution" {
		u, _ := req.(*workflowservice.UpdateWorkflowExecutionRequest)
		id := u.GetWorkflowExecution().GetWorkflowId()
		name := u.GetRequest().GetInput().GetName()
		if name != workflows.UpdateRead || !isService(id) {
			return Decision{}, false
		}
		return readService(c, id), true
	}
	if !isRead(api) {
		return Decision{}, false
	}
	if id := executionID(req); isService(id) {
		return readService(c, id), true
	}
	return allow(string(c.Role) + " " + c.Subject + " may read"), true
}

func isService(id string) bool {
	_, ok := workflows.ServiceRegion(id)
	return ok || id == workflows.CentralServiceID
}

// readService: a user with regions reads only their regions' service workflows (and central's).
func readService(c *Claims, id string) Decision {
	r, ok := workflows.ServiceRegion(id)
	if !ok || len(c.Regions) == 0 || c.Grants(r) {
		return allow(string(c.Role) + " " + c.Subject + " may read " + id)
	}
	return deny(fmt.Sprintf("%s %s may read region %s only, not %s", c.Role, c.Subject, strings.Join(c.Regions, ", "), r))
}

func decideOperator(ctx context.Context, c *Claims, api string, call Call, lookup Lookup) Decision {
	switch r := call.Request.(type) {
	case *workflowservice.StartWorkflowExecutionRequest:
		return checkStart(c, r.GetSearchAttributes(), r.GetTaskQueue(), c.Subject)
	case *workflowservice.SignalWithStartWorkflowExecutionRequest:
		return checkStart(c, r.GetSearchAttributes(), r.GetTaskQueue(), c.Subject)
	case *workflowservice.ExecuteMultiOperationRequest:
		ops := r.GetOperations()
		if len(ops) != 2 || ops[0].GetStartWorkflow() == nil || ops[1].GetUpdateWorkflow() == nil {
			return deny(fmt.Sprintf("operator %s may run update-with-start only (a start, then an update)", c.Subject))
		}
		s := ops[0].GetStartWorkflow()
		if d := checkStart(c, s.GetSearchAttributes(), s.GetTaskQueue(), c.Subject); !d.Allow {
			return d
		}
		if u := ops[1].GetUpdateWorkflow(); u.GetWorkflowExecution().GetWorkflowId() != s.GetWorkflowId() {
			return deny(fmt.Sprintf("operator %s: update-with-start must update the workflow it starts", c.Subject))
		}
		return allow("operator " + c.Subject + " starts a task in a granted region")
	case *workflowservice.CreateScheduleRequest:
		return checkSchedule(c, r.GetScheduleId(), r.GetSchedule().GetAction().GetStartWorkflow())
	case *workflowservice.UpdateScheduleRequest:
		if d := checkSchedule(c, r.GetScheduleId(), r.GetSchedule().GetAction().GetStartWorkflow()); !d.Allow {
			return d
		}
		return existingSchedule(ctx, c, call.Namespace, r.GetScheduleId(), lookup)
	case *workflowservice.PatchScheduleRequest:
		return existingSchedule(ctx, c, call.Namespace, r.GetScheduleId(), lookup)
	case *workflowservice.DeleteScheduleRequest:
		return existingSchedule(ctx, c, call.Namespace, r.GetScheduleId(), lookup)
	case *workflowservice.UpdateWorkflowExecutionRequest:
		id := r.GetWorkflowExecution().GetWorkflowId()
		if region, ok := workflows.ServiceRegion(id); ok {
			if name := r.GetRequest().GetInput().GetName(); name != workflows.UpdateChange {
				return deny(fmt.Sprintf("operator %s may send a region's service only %q and %q updates, not %q", c.Subject, workflows.UpdateRead, workflows.UpdateChange, clip(name)))
			}
			return inRegion(c, region, "change region "+region+"'s inventory")
		}
		if id == workflows.CentralServiceID {
			return deny(fmt.Sprintf("operator %s may only read central's service", c.Subject))
		}
		return existingTask(ctx, c, call.Namespace, id, api, lookup)
	case *workflowservice.RequestCancelWorkflowExecutionRequest, *workflowservice.TerminateWorkflowExecutionRequest,
		*workflowservice.SignalWorkflowExecutionRequest, *workflowservice.DeleteWorkflowExecutionRequest:
		id := executionID(r)
		if isService(id) {
			return deny(fmt.Sprintf("operator %s may not %s the service workflow %s: that is for admins", c.Subject, api, id))
		}
		return existingTask(ctx, c, call.Namespace, id, api, lookup)
	}
	return deny(fmt.Sprintf("operator %s may not call %s: operators start and control tasks, change inventory and read", c.Subject, api))
}

func inRegion(c *Claims, region, what string) Decision {
	if c.Grants(region) {
		return allow("operator " + c.Subject + " may " + what)
	}
	return deny(fmt.Sprintf("operator %s may act in %s only, not %s", c.Subject, grants(c), region))
}

func grants(c *Claims) string {
	if len(c.Regions) == 0 {
		return "no region"
	}
	return strings.Join(c.Regions, ", ")
}

// checkStart checks a task start's search attributes and queue against the operator's grants.
func checkStart(c *Claims, sa *commonpb.SearchAttributes, tq *taskqueuepb.TaskQueue, startedBy string) Decision {
	region := keyword(sa, workflows.AttrRegion.GetName())
	kind := keyword(sa, workflows.AttrKind.GetName())
	by := keyword(sa, workflows.AttrStartedBy.GetName())
	switch {
	case region == "":
		return deny(fmt.Sprintf("operator %s may start tasks only: this workflow has no %s", c.Subject, workflows.AttrRegion.GetName()))
	case kind == workflows.TaskPlan:
		// A plan names its regions in its input, which this decision does not read: only
		// admins make plans.
		return deny(fmt.Sprintf("operator %s may not make plans: a plan sends images to regions of its own choosing, which is for admins", c.Subject))
	case !slices.Contains(workflows.TaskKinds, kind):
		return deny(fmt.Sprintf("operator %s may start tasks only (%s), not %q", c.Subject, strings.Join(workflows.TaskKinds, ", "), clip(kind)))
	case !c.Grants(region):
		return deny(fmt.Sprintf("operator %s may act in %s only, not %s", c.Subject, grants(c), region))
	case tq.GetName() != regionQueuePrefix+region && tq.GetName() != centralQueue:
		return deny(fmt.Sprintf("operator %s: a task in region %s runs on queue %s%s or %s, not %q", c.Subject, region, regionQueuePrefix, region, centralQueue, clip(tq.GetName())))
	case by != startedBy:
		return deny(fmt.Sprintf("operator %s: %s must be %q, not %q", c.Subject, workflows.AttrStartedBy.GetName(), startedBy, clip(by)))
	}
	return allow("operator " + c.Subject + " starts a " + kind + " task in " + region)
}

func checkSchedule(c *Claims, id string, action interface {
	GetSearchAttributes() *commonpb.SearchAttributes
	GetTaskQueue() *taskqueuepb.TaskQueue
}) Decision {
	if action == nil || id == "" {
		return deny(fmt.Sprintf("operator %s may make schedules that start a task only", c.Subject))
	}
	return checkStart(c, action.GetSearchAttributes(), action.GetTaskQueue(), "schedule:"+id)
}

func existingTask(ctx context.Context, c *Claims, ns, id, api string, lookup Lookup) Decision {
	if lookup == nil || id == "" {
		return deny(fmt.Sprintf("operator %s may not %s a workflow whose region cannot be checked", c.Subject, api))
	}
	region, err := lookup.WorkflowRegion(ctx, ns, id)
	if err != nil {
		return deny(fmt.Sprintf("operator %s: cannot check the region of %s: %v", c.Subject, clip(id), err))
	}
	if region == "" {
		return deny(fmt.Sprintf("operator %s may %s tasks only: %s has no %s", c.Subject, api, clip(id), workflows.AttrRegion.GetName()))
	}
	return inRegion(c, region, api+" "+id)
}

func existingSchedule(ctx context.Context, c *Claims, ns, id string, lookup Lookup) Decision {
	if lookup == nil || id == "" {
		return deny(fmt.Sprintf("operator %s may not change a schedule whose region cannot be checked", c.Subject))
	}
	region, err := lookup.ScheduleRegion(ctx, ns, id)
	if err != nil {
		return deny(fmt.Sprintf("operator %s: cannot check the region of schedule %s: %v", c.Subject, clip(id), err))
	}
	if region == "" {
		return deny(fmt.Sprintf("operator %s may change task schedules only: schedule %s has no %s", c.Subject, clip(id), workflows.AttrRegion.GetName()))
	}
	return inRegion(c, region, "change schedule "+id)
}

// keyword reads a Keyword search attribute's value ("" when absent or not a JSON string).
func keyword(sa *commonpb.SearchAttributes, name string) string {
	return KeywordAttr(sa, name)
}

// KeywordAttr reads a Keyword search attribute's value ("" when absent or not a JSON string).
func KeywordAttr(sa *commonpb.SearchAttributes, name string) string {
	p := sa.GetIndexedFields()[name]
	if p == nil || len(p.GetData()) > 1024 {
		return ""
	}
	var s string
	if json.Unmarshal(p.GetData(), &s) != nil {
		return ""
	}
	return s
}
