package devenv_test

import (
	"testing"

	"tms/internal/sampledisk"
	"tms/internal/storetest"
	"tms/workflows"
)

// TestRerunsDoTheirWork runs the same deploy and the same capture twice under the same
// workflow ids, with a disk changed in between, on a real Temporal server: each run redoes its
// work from the disk as it is then, and never reports an earlier run's outcome. Restoring a room
// to its image every morning is the most common thing a lab does.
func TestRerunsDoTheirWork(t *testing.T) {
	env := start(t, t.TempDir(), "region-a", "region-b")
	defer env.Stop()
	src, _ := env.Terminal("a-pc1")
	v1 := capture(t, env, "region-a", "a-pc1", "classroom")

	in := workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "classroom"}
	first := deploy(t, env, in)
	if first.Failed != 0 {
		t.Fatalf("first deploy: %+v", first)
	}
	want := storetest.FileSum(t, src.Disk)
	pc2, _ := env.Terminal("b-pc2")
	if _, err := sampledisk.Mutate(pc2.Disk, 0.05, 7); err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, pc2.Disk) == want {
		t.Fatal("the mutation changed nothing")
	}

	// The same deploy again: b-pc2 is written back, the others are checked and left alone.
	second := deploy(t, env, in)
	if second.Failed != 0 || len(second.Terminals) != 3 {
		t.Fatalf("second deploy: %+v", second)
	}
	for _, o := range second.Terminals {
		term, _ := env.Terminal(o.Name)
		if got := storetest.FileSum(t, term.Disk); got != want {
			t.Errorf("%s differs from the image after the second deploy reported %+v", o.Name, o)
		}
		if o.Name == "b-pc2" && o.Written == 0 {
			t.Errorf("b-pc2's second deploy wrote nothing: %+v", o)
		}
		if o.Name != "b-pc2" && o.Written != 0 {
			t.Errorf("%s was already right but the second deploy wrote %d chunks", o.Name, o.Written)
		}
	}

	// The same capture again after a change: a new version, child of the first, that holds the
	// change.
	if _, err := sampledisk.Mutate(src.Disk, 0.05, 8); err != nil {
		t.Fatal(err)
	}
	v2 := capture(t, env, "region-a", "a-pc1", "classroom")
	if v2.Version == v1.Version {
		t.Fatalf("the second capture reported the first one's version %s", v1.Version)
	}
	third := deploy(t, env, workflows.DeployImageInput{Region: "region-b", Terminals: []string{"b-pc3"}, Image: "classroom"})
	pc3, _ := env.Terminal("b-pc3")
	if third.Version != v2.Version || storetest.FileSum(t, pc3.Disk) != storetest.FileSum(t, src.Disk) {
		t.Fatalf("b-pc3 deployed with %s does not hold a-pc1's changed disk (want version %s)", third.Version, v2.Version)
	}
}
