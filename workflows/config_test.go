package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/settings"
)

func configEnv() *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Central{})
	env.RegisterActivity(&activities.Region{})
	env.RegisterWorkflow(ConfigureRegion)
	return env
}

func TestConfigureRegionRefusesBadValuesBeforeTheRegion(t *testing.T) {
	for _, tc := range []struct{ name, key, value string }{
		{"unknown key", "boot.dhcp", "full"},
		{"out of bounds", settings.KeyStoreHighWater, "0.3"},
		{"not a zone", settings.KeyTimezone, "Atlantis/Capital"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := configEnv()
			env.ExecuteWorkflow(ConfigureRegion, ConfigureRegionInput{Region: "region-a", Key: tc.key, Value: tc.value})
			err := env.GetWorkflowError()
			if !activities.ErrBadInput.Matches(err) {
				t.Fatalf("err %v; want BadInput", err)
			}
			env.AssertNotCalled(t, "ApplySetting", mock.Anything, mock.Anything)
			env.AssertNotCalled(t, "RecordRegionSetting", mock.Anything, mock.Anything)
		})
	}
}

func TestConfigureRegionAppliesThenRecords(t *testing.T) {
	env := configEnv()
	at := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	env.OnActivity(r.ApplySetting, mock.Anything, mock.MatchedBy(func(in activities.ApplySettingInput) bool {
		// The value travels in its canonical form, with who pushed it and the task.
		return in.Key == settings.KeyWakeTimeout && in.Value == "5m0s" && in.By == "ana" && in.Task != ""
	})).Return(activities.ApplySettingResult{Key: settings.KeyWakeTimeout, Value: "5m0s", Previous: "3m0s", At: at}, nil).Once()
	env.OnActivity(c.RecordRegionSetting, mock.Anything, mock.MatchedBy(func(in activities.RecordSettingInput) bool {
		return in.Region == "region-a" && in.Key == settings.KeyWakeTimeout && in.Value == "5m0s" && in.By == "ana" && in.At.Equal(at)
	})).Return(nil).Once()
	env.ExecuteWorkflow(ConfigureRegion, ConfigureRegionInput{Region: "region-a", Key: settings.KeyWakeTimeout, Value: "300s", StartedBy: "ana"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res ConfigureRegionResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Value != "5m0s" || res.Previous != "3m0s" || !res.At.Equal(at) {
		t.Fatalf("result %+v", res)
	}
	env.AssertExpectations(t)
}

func TestConfigureRegionWaitsForAnOfflineRegion(t *testing.T) {
	env := configEnv()
	// The region answers only after two days (it was switched off over a weekend); the
	// push waits for it and is pending meanwhile.
	env.OnActivity(r.ApplySetting, mock.Anything, mock.Anything).After(48*time.Hour).
		Return(activities.ApplySettingResult{Key: settings.KeyTimezone, Value: "Europe/Berlin", Previous: "UTC", At: time.Now()}, nil).Once()
	env.OnActivity(c.RecordRegionSetting, mock.Anything, mock.Anything).Return(nil).Once()
	var pending ConfigureProgress
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryProgress)
		if err != nil {
			t.Error(err)
			return
		}
		if err := v.Get(&pending); err != nil {
			t.Error(err)
		}
	}, 24*time.Hour)
	env.ExecuteWorkflow(ConfigureRegion, ConfigureRegionInput{Region: "region-a", Key: settings.KeyTimezone, Value: "Europe/Berlin"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if pending.Phase != PhaseApplying || pending.Value != "Europe/Berlin" {
		t.Fatalf("progress a day in: %+v; want applying", pending)
	}
	env.AssertExpectations(t)
}

func TestConfigureRegionStopsWhenTheRegionRefuses(t *testing.T) {
	env := configEnv()
	env.OnActivity(r.ApplySetting, mock.Anything, mock.Anything).
		Return(activities.ApplySettingResult{}, activities.ErrBadInput.New("region region-a runs without run-time settings", nil)).Once()
	env.ExecuteWorkflow(ConfigureRegion, ConfigureRegionInput{Region: "region-a", Key: settings.KeyClaimQuiet, Value: "30s"})
	if err := env.GetWorkflowError(); !activities.ErrBadInput.Matches(err) {
		t.Fatalf("err %v; want the region's BadInput", err)
	}
	env.AssertNotCalled(t, "RecordRegionSetting", mock.Anything, mock.Anything)
	env.AssertExpectations(t) // once: a refusal is not retried
}
