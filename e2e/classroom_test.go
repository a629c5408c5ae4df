//go:build netboot

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"tms/internal/classroom"
	"tms/internal/sampledisk"
	"tms/workflows"
)

// The classroom test's lab: ten agents behind shaped ports and one region.
const (
	labAgents = 10
	labRate   = 100_000_000 // bit/s per port: a deploy takes about 10 s in unicast
	labDisk   = 24 << 20
	// labUnicast says the region serves every chunk itself (its egress is then about
	// labAgents times the image's stored bytes); false: the terminals form a swarm.
	labUnicast = false
	// egressBound is the most the region may send for a deploy to labAgents terminals, in
	// stored bytes of the image (protocol overhead included: TCP/IP headers and the agent API).
	egressBound = 1.5
)

// labTimeouts: an agent reports every 2 s, so 20 s of silence is a dead one.
var labTimeouts = workflows.AgentTimeouts{Silence: 20 * time.Second, Tries: 1, Total: 5 * time.Minute}

// TestClassroom deploys one image to ten real tms-agent processes, each in a network namespace
// of its own behind a shaped port (package internal/classroom), and checks every disk is the
// image, byte for byte, and the region's egress. Then it deploys again to fresh disks with
// faults: one agent killed mid-deploy (its task fails after its silence, the others finish) and
// one terminal switched on only when the others are half done (it joins and finishes).
func TestClassroom(t *testing.T) {
	spec, child, err := classroom.ChildSpec()
	if err != nil {
		t.Fatal(err)
	}
	if child {
		classroomScenario(t, spec)
		return
	}
	if os.Getenv(childEnv) != "" {
		t.Skip("runs in the parent only")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run: sudo scripts/test-netboot)")
	}
	for _, c := range []string{"ip", "tc", "go"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s (Debian: iproute2; go to build tms-agent): %v", c, err)
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := classroom.Prepare(ctx, classroom.PrepareOptions{Terminals: labAgents, Rate: labRate, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := s.RunChild(ctx, "-test.run=^TestClassroom$", "-test.v", "-test.timeout=8m"); err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*", "logs", "*.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				t.Logf("%s:\n%s", filepath.Base(l), b)
			}
		}
		t.Fatalf("the classroom in lab %s failed: %v", s.Lab.Name, err)
	}
}

// classroomScenario runs in the region's namespace.
func classroomScenario(t *testing.T, spec classroom.Spec) {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	c, err := classroom.Start(ctx, classroom.Options{Spec: spec, Terminals: labAgents, DiskSize: labDisk, Unicast: labUnicast})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	src := filepath.Join(spec.Dir, "image.raw")
	if err := sampledisk.Write(src, sampledisk.Options{Size: labDisk, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	img, err := c.Import(ctx, src, "lab")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s: %d disk bytes, %d stored", img.Version[:12], img.DiskSize, img.StoredBytes)
	names := c.Names()

	t.Run("deploy", func(t *testing.T) {
		d, err := c.StartDeploy(ctx, classroom.DeployOptions{Image: "lab", Terminals: names, Timeouts: labTimeouts})
		if err != nil {
			t.Fatal(err)
		}
		run, err := d.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if run.Result.Failed != 0 || len(run.Finished) != labAgents {
			t.Fatalf("deploy: %d failed, %d finished: %+v", run.Result.Failed, len(run.Finished), run.Result.Terminals)
		}
		if err := c.CheckDisks(img, names); err != nil {
			t.Fatal(err)
		}
		ratio := float64(run.Egress) / float64(img.StoredBytes)
		t.Logf("%d terminals in %v (region egress %.2f × the stored image, chunk bytes %.2f ×)", labAgents, run.Last.Sub(run.Start).Round(time.Millisecond),
			ratio, float64(run.ChunkBytes)/float64(img.StoredBytes))
		if ratio > egressBound {
			t.Errorf("the region sent %.2f × the image's stored bytes; at most %.2f allowed", ratio, egressBound)
		}
		// The region's own count of chunk bytes sent to agents travels inside the port's bytes.
		if run.ChunkBytes <= 0 || run.ChunkBytes > run.Egress {
			t.Errorf("the region counted %d chunk bytes sent to agents; its port sent %d", run.ChunkBytes, run.Egress)
		}
		if labUnicast && run.ChunkBytes < labAgents*img.StoredBytes {
			t.Errorf("the region counted %d chunk bytes sent in unicast to %d terminals, less than %d × %d stored", run.ChunkBytes, labAgents, labAgents, img.StoredBytes)
		}
	})

	t.Run("faults", func(t *testing.T) {
		victim, late := names[2], names[labAgents-1]
		if err := c.EmptyDisks(names); err != nil {
			t.Fatal(err)
		}
		// The late terminal is unplugged: the deploy's magic packet does not wake it.
		c.Env.StopAgent(late)
		d, err := c.StartDeploy(ctx, classroom.DeployOptions{Image: "lab", Terminals: names, Timeouts: labTimeouts})
		if err != nil {
			t.Fatal(err)
		}
		// Killed as soon as it writes: a swarm of ten writes these small disks in about a
		// second, and a victim first seen at 20% was once seen done.
		if err := d.WaitProgress(ctx, []string{victim}, 0.02); err != nil {
			t.Fatal(err)
		}
		c.Env.StopAgent(victim)
		t.Logf("killed %s's agent at %v", victim, time.Since(d.Start).Round(time.Millisecond))
		var others []string
		for _, n := range names {
			if n != victim && n != late {
				others = append(others, n)
			}
		}
		if err := d.WaitProgress(ctx, others, 0.5); err != nil {
			t.Fatal(err)
		}
		c.Env.StartAgent(late)
		t.Logf("switched %s on at %v", late, time.Since(d.Start).Round(time.Millisecond))
		run, err := d.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ok []string
		for _, o := range run.Result.Terminals {
			switch {
			case o.Name == victim && o.OK:
				t.Errorf("%s's deploy succeeded, yet its agent was killed", victim)
			case o.Name != victim && !o.OK:
				t.Errorf("%s's deploy failed: %s", o.Name, o.Error)
			case o.OK:
				ok = append(ok, o.Name)
			}
		}
		if run.Result.Failed != 1 || len(ok) != labAgents-1 {
			t.Fatalf("want one failure (%s) and %d finished: %+v", victim, labAgents-1, run.Result.Terminals)
		}
		if err := c.CheckDisks(img, ok); err != nil {
			t.Fatal(err)
		}
		var last time.Time
		for _, n := range others {
			if run.Finished[n].After(last) {
				last = run.Finished[n]
			}
		}
		t.Logf("late %s finished at %v, the last of the others at %v", late, run.Finished[late].Sub(run.Start).Round(time.Millisecond),
			last.Sub(run.Start).Round(time.Millisecond))
	})
}
