package activities

import (
	"testing"
	"time"

	"tms/settings"
)

// liveWake is a LiveSettings whose wake timeout a test sets below the pushable bounds.
type liveWake struct {
	LiveSettings
	wake time.Duration
}

func (l liveWake) WakeTimeout() time.Duration { return l.wake }

func TestPowerOnWaitsTheLiveWakeTimeout(t *testing.T) {
	r, _, _ := powerRegion(t, "10.0.5.21")
	r.WakeTimeout = time.Hour // what the region started with: a pushed value wins
	r.Settings = liveWake{LiveSettings: settings.NewLive(settings.Defaults(), settings.Defaults()), wake: 300 * time.Millisecond}
	start := time.Now()
	out, err := runPower(t, r.PowerOn, PowerOnInput{MAC: powerMAC, Every: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if out.Outcome != PowerNoAnswer {
		t.Fatalf("outcome %+v; want no answer", out)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Fatalf("the power-on waited %s; want the live 300ms", d)
	}
}
