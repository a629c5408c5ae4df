package workflows

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
)

const version = "91bc0000000000000000000000000000000000000000000000000000000000aa"

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Central{})
	env.RegisterActivity(&activities.Region{})
	env.RegisterWorkflow(ShareImage)
	return env
}

var c *activities.Central
var r *activities.Region

func located(sources ...string) activities.LocateResult {
	res := activities.LocateResult{Version: version}
	for _, s := range sources {
		res.Sources = append(res.Sources, activities.Location{Region: s, Endpoint: "http://" + s + ":8081"})
	}
	return res
}

func run(t *testing.T, env *testsuite.TestWorkflowEnvironment) (ShareImageResult, error) {
	t.Helper()
	env.ExecuteWorkflow(ShareImage, ShareImageInput{Image: "win11:exam", Target: "region-b"})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res ShareImageResult
	err := env.GetWorkflowError()
	if err == nil {
		env.GetWorkflowResult(&res)
	}
	return res, err
}

func TestShareAlreadyLocal(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(c.LocateVersion, mock.Anything, activities.LocateInput{Image: "win11:exam", Target: "region-b"}).
		Return(activities.LocateResult{Version: version, TargetHas: true}, nil)
	res, err := run(t, env)
	if err != nil || res.Path != "local" || res.Version != version {
		t.Fatalf("%+v, %v", res, err)
	}
	env.AssertNotCalled(t, "PullFromPeer", mock.Anything, mock.Anything)
}

func TestSharePeerPull(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(located("region-a"), nil)
	env.OnActivity(c.MintGrant, mock.Anything, activities.GrantInput{Version: version, Audience: "region-b", Server: "region-a"}).Return(activities.GrantResult{Token: "g"}, nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, activities.PullInput{Version: version, Endpoint: "http://region-a:8081", Grant: "g"}).
		Return(activities.MoveResult{MovedBytes: 100}, nil)
	env.OnActivity(c.RecordLocation, mock.Anything, activities.RecordInput{Version: version, Region: "region-b"}).Return(nil).Once()
	res, err := run(t, env)
	if err != nil || res.Path != "peer" || res.Source != "region-a" || res.MovedBytes != 100 {
		t.Fatalf("%+v, %v", res, err)
	}
	env.AssertExpectations(t)
}

func TestShareFallsBackToTheNextPeerThenRelay(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(located("region-a", "region-c", "region-d"), nil)
	env.OnActivity(c.MintGrant, mock.Anything, mock.Anything).Return(activities.GrantResult{Token: "g"}, nil)
	unreachable := temporal.NewNonRetryableApplicationError("dial tcp: connection refused", "Unavailable", nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, mock.Anything).Return(activities.MoveResult{}, unreachable).Times(2)
	env.OnActivity(r.PushToRelay, mock.Anything, activities.RelayInput{Version: version}).Return(activities.MoveResult{MovedBytes: 70}, nil).Once()
	env.OnActivity(r.PullFromRelay, mock.Anything, activities.RelayInput{Version: version}).Return(activities.MoveResult{MovedBytes: 70}, nil).Once()
	env.OnActivity(c.RecordLocation, mock.Anything, mock.Anything).Return(nil).Once()
	res, err := run(t, env)
	if err != nil || res.Path != "relay" || res.Source != "region-a" || res.MovedBytes != 70 {
		t.Fatalf("%+v, %v", res, err)
	}
	env.AssertExpectations(t)
}

func TestShareRelayPushFailureTriesTheNextSource(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(located("region-a", "region-c"), nil)
	env.OnActivity(c.MintGrant, mock.Anything, mock.Anything).Return(activities.GrantResult{Token: "g"}, nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, mock.Anything).Return(activities.MoveResult{},
		activities.ErrSourceCorrupt.New("chunk 3fa4 from region-a: source sent corrupt data", nil))
	pushes := 0
	env.OnActivity(r.PushToRelay, mock.Anything, mock.Anything).Return(func(_ context.Context, _ activities.RelayInput) (activities.MoveResult, error) {
		pushes++
		if pushes == 1 {
			return activities.MoveResult{}, activities.ErrNotHere.New("region region-a does not hold version 91bc", nil)
		}
		return activities.MoveResult{MovedBytes: 5}, nil
	})
	env.OnActivity(r.PullFromRelay, mock.Anything, mock.Anything).Return(activities.MoveResult{MovedBytes: 5}, nil)
	env.OnActivity(c.RecordLocation, mock.Anything, mock.Anything).Return(nil).Once()
	res, err := run(t, env)
	if err != nil || res.Path != "relay" || res.Source != "region-c" {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestShareFailsClearlyWhenEveryPathFails(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(located("region-a"), nil)
	env.OnActivity(c.MintGrant, mock.Anything, mock.Anything).Return(activities.GrantResult{Token: "g"}, nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, mock.Anything).Return(activities.MoveResult{},
		temporal.NewNonRetryableApplicationError("connection refused", "Unavailable", nil))
	env.OnActivity(r.PushToRelay, mock.Anything, mock.Anything).Return(activities.MoveResult{},
		activities.ErrNoRelay.New("region region-a has no relay storage configured", nil))
	env.OnActivity(r.PullFromRelay, mock.Anything, mock.Anything).Return(activities.MoveResult{}, nil).Maybe()
	_, err := run(t, env)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != "ShareFailed" {
		t.Fatalf("error %v, want ShareFailed", err)
	}
	for _, want := range []string{"win11:exam", "region-b", "peer pull from region-a: connection refused", "relay from region-a: region region-a has no relay storage"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	env.AssertNotCalled(t, "RecordLocation", mock.Anything, mock.Anything)
}

func TestShareUnknownImageIsNotRetried(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(activities.LocateResult{},
		activities.ErrUnknownImage.New("image win11:exam is not in the catalog", nil)).Once()
	_, err := run(t, env)
	if err == nil || !strings.Contains(err.Error(), "not in the catalog") {
		t.Fatalf("%v", err)
	}
	env.AssertExpectations(t)
}

func TestOrderSourcesPrefersTheSameSite(t *testing.T) {
	target := activities.Location{Region: "b", Labels: map[string]string{"site": "north", "zone": "city"}}
	src := []activities.Location{
		{Region: "z", Labels: map[string]string{"site": "south"}},
		{Region: "y", Labels: map[string]string{"site": "east", "zone": "city"}},
		{Region: "x", Labels: map[string]string{"site": "north"}},
		{Region: "a"},
	}
	activities.OrderSources(target, src)
	var got []string
	for _, s := range src {
		got = append(got, s.Region)
	}
	if strings.Join(got, ",") != "x,y,a,z" {
		t.Fatalf("order %v, want x,y,a,z", got)
	}
}

func TestShareCarriesItsRateToEveryTransfer(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(located("region-a"), nil)
	env.OnActivity(c.MintGrant, mock.Anything, mock.Anything).Return(activities.GrantResult{Token: "g"}, nil)
	unreachable := temporal.NewNonRetryableApplicationError("dial tcp: connection refused", "Unavailable", nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, activities.PullInput{Version: version, Endpoint: "http://region-a:8081", Grant: "g", Rate: 5_000_000}).
		Return(activities.MoveResult{}, unreachable).Once()
	env.OnActivity(r.PushToRelay, mock.Anything, activities.RelayInput{Version: version, Rate: 5_000_000}).Return(activities.MoveResult{MovedBytes: 70}, nil).Once()
	env.OnActivity(r.PullFromRelay, mock.Anything, activities.RelayInput{Version: version, Rate: 5_000_000}).Return(activities.MoveResult{MovedBytes: 70}, nil).Once()
	env.OnActivity(c.RecordLocation, mock.Anything, mock.Anything).Return(nil).Once()
	env.ExecuteWorkflow(ShareImage, ShareImageInput{Image: "win11:exam", Target: "region-b", Rate: 5_000_000})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	env.AssertExpectations(t)
}

func TestShareRefusesARateOutOfBounds(t *testing.T) {
	for _, rate := range []int64{-1, 1, 100_000_000_000} {
		env := newEnv(t)
		env.ExecuteWorkflow(ShareImage, ShareImageInput{Image: "win11:exam", Target: "region-b", Rate: rate})
		err := env.GetWorkflowError()
		if !activities.ErrBadInput.Matches(err) {
			t.Errorf("rate %d: %v; want a BadInput error", rate, err)
		}
	}
}
