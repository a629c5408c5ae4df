package activities_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"go.temporal.io/sdk/temporal"

	"tms/activities"
)

func TestErrorTypeNewIsNonRetryableOfItsType(t *testing.T) {
	cause := errors.New("bad mac")
	err := fmt.Errorf("wrapped: %w", activities.ErrBadInput.New("mac x is not a MAC", cause))
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != "BadInput" || !ae.NonRetryable() || ae.Message() != "mac x is not a MAC" {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("the cause is not wrapped: %v", err)
	}
	if !activities.ErrBadInput.Matches(err) || activities.ErrConflict.Matches(err) || activities.ErrBadInput.Matches(cause) {
		t.Errorf("Matches decides wrongly for %v", err)
	}
}

func TestErrorTypeNewCarriesDetails(t *testing.T) {
	err := activities.ErrDeployFailed.New("every terminal failed", nil, 3)
	var ae *temporal.ApplicationError
	var n int
	if !errors.As(err, &ae) || ae.Details(&n) != nil || n != 3 {
		t.Fatalf("details of %v: %d", err, n)
	}
}

func TestNonRetryableKeepsOrderAndWords(t *testing.T) {
	got := activities.NonRetryable(activities.ErrSourceCorrupt, activities.ErrNoSource, activities.ErrAgentFailed)
	if want := []string{"SourceCorrupt", "NoVerifiedCopy", "AgentFailed"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
