package temporalauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"

	"tms/auth"
	"tms/workflows"
)

// FrontendLookup answers auth.Lookup by describing the workflow or schedule through the
// frontend itself, as a worker (WorkflowService must send a worker token), and remembers each
// answer for TTL: a task's region never changes, so a short cache only bounds memory.
type FrontendLookup struct {
	// Service returns the frontend's workflow service (called on first use: the lookup is made
	// before the server it asks has started).
	Service func() (workflowservice.WorkflowServiceClient, error)
	TTL     time.Duration // default 30s
	MaxSize int           // default 4096 entries

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	region string
	at     time.Time
}

var _ auth.Lookup = (*FrontendLookup)(nil)

// ErrLookup wraps what went wrong asking the frontend.
var ErrLookup = errors.New("cannot look up the region")

func (l *FrontendLookup) get(key string, now time.Time) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ttl := l.TTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	c, ok := l.cache[key]
	if !ok || now.Sub(c.at) > ttl {
		return "", false
	}
	return c.region, true
}

func (l *FrontendLookup) put(key, region string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	max := l.MaxSize
	if max <= 0 {
		max = 4096
	}
	if l.cache == nil || len(l.cache) >= max {
		l.cache = map[string]cached{} // simplest bound: start over
	}
	l.cache[key] = cached{region: region, at: now}
}

func (l *FrontendLookup) ask(ctx context.Context, key string, f func(context.Context, workflowservice.WorkflowServiceClient) (*commonpb.SearchAttributes, error)) (string, error) {
	now := time.Now()
	if r, ok := l.get(key, now); ok {
		return r, nil
	}
	svc, err := l.Service()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrLookup, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sa, err := f(ctx, svc)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return "", fmt.Errorf("not found")
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrLookup, err)
	}
	r := auth.KeywordAttr(sa, workflows.AttrRegion.GetName())
	l.put(key, r, now)
	return r, nil
}

// WorkflowRegion is the TmsRegion of the workflow's latest run.
func (l *FrontendLookup) WorkflowRegion(ctx context.Context, ns, id string) (string, error) {
	return l.ask(ctx, "w\x00"+ns+"\x00"+id, func(ctx context.Context, s workflowservice.WorkflowServiceClient) (*commonpb.SearchAttributes, error) {
		r, err := s.DescribeWorkflowExecution(ctx, &workflowservice.DescribeWorkflowExecutionRequest{Namespace: ns, Execution: &commonpb.WorkflowExecution{WorkflowId: id}})
		return r.GetWorkflowExecutionInfo().GetSearchAttributes(), err
	})
}

// ScheduleRegion is the TmsRegion of the schedule's action.
func (l *FrontendLookup) ScheduleRegion(ctx context.Context, ns, id string) (string, error) {
	return l.ask(ctx, "s\x00"+ns+"\x00"+id, func(ctx context.Context, s workflowservice.WorkflowServiceClient) (*commonpb.SearchAttributes, error) {
		r, err := s.DescribeSchedule(ctx, &workflowservice.DescribeScheduleRequest{Namespace: ns, ScheduleId: id})
		return r.GetSchedule().GetAction().GetStartWorkflow().GetSearchAttributes(), err
	})
}
