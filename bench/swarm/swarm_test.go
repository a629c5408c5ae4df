// Package swarm measures how a deploy scales with the size of a classroom: one image to N
// terminals, N = 1, 5, 10 and 30, with the region serving every chunk itself (unicast) and with
// the terminals fetching chunks from each other (swarm). Run it as root with scripts/bench swarm.
//
// The classroom is real processes on a real, shaped network (package internal/classroom): the
// region (with central and the Temporal server, in-process) in one network namespace, each
// terminal a tms-agent process in a namespace of its own, every port limited to
// $TMS_SWARM_RATE each way (default 16mbit) by tc. The image is incompressible (random bytes),
// sized so that one terminal takes about 10 s at that rate. Each deploy goes to fresh, empty
// disks and is timed from the DeployImage workflow's start to the last terminal's agent having
// verified its disk, reported, served its peers as long as they asked, and exited. For each N and mode it reports T(N) ÷ T(1) (T(1) of the same
// mode, same run), the spread of the terminals' completion times (p99 ÷ p50), and the region's
// egress (what its port sent, from the interface's counter) ÷ the image's stored bytes. The table
// above the final lines also shows the chunk bytes the region counted in its metrics ÷ stored.
package swarm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tms/internal/classroom"
	"tms/internal/netlab"
	"tms/workflows"
)

// defaultSizes are the classroom sizes measured; $TMS_SWARM_N (for example 1,3) overrides
// them. The first must be 1: it is T(1).
var defaultSizes = []int{1, 5, 10, 30}

func sizes(b *testing.B) []int {
	s := os.Getenv("TMS_SWARM_N")
	if s == "" {
		return defaultSizes
	}
	var ns []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > netlab.MaxHosts-1 || (len(ns) == 0 && n != 1) {
			b.Fatalf("TMS_SWARM_N=%q: want classroom sizes from 1 to %d, the first 1, for example 1,5,10,30", s, netlab.MaxHosts-1)
		}
		ns = append(ns, n)
	}
	return ns
}

const defaultRate = "16mbit"

// modes are the modes measured: unicast, then swarm; $TMS_SWARM_MODE (unicast or swarm) keeps
// one, for looking into it.
func modes(b *testing.B) []string {
	switch m := os.Getenv("TMS_SWARM_MODE"); m {
	case "":
		return []string{"unicast", "swarm"}
	case "unicast", "swarm":
		return []string{m}
	default:
		b.Fatalf("TMS_SWARM_MODE=%q: want unicast or swarm", m)
		return nil
	}
}

// perTerminal is how long one terminal's deploy should take at the port rate.
const perTerminal = 10 * time.Second

func BenchmarkSwarm(b *testing.B) {
	classroom.Bench(b, "BenchmarkSwarm", func() classroom.PrepareOptions {
		return classroom.PrepareOptions{Terminals: slices.Max(sizes(b)), Rate: classroom.RateEnv(b, "TMS_SWARM_RATE", defaultRate)}
	}, measure)
}

type result struct {
	n       int
	mode    string
	t       time.Duration
	p50     time.Duration
	p99     time.Duration
	min     time.Duration
	egress  float64 // ÷ stored bytes
	chunks  float64 // the region's chunk bytes to agents (its metrics) ÷ stored bytes
	tRatio  float64
	details string
}

// measure runs in the region's namespace.
func measure(b *testing.B, spec classroom.Spec) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	// The image: random bytes, one terminal's perTerminal at the rate, in whole MiB.
	size := max(spec.Rate/8*int64(perTerminal/time.Second)/(1<<20), 4) << 20
	src := filepath.Join(spec.Dir, "image.raw")
	if err := randomImage(src, size); err != nil {
		b.Fatal(err)
	}
	sizes := sizes(b)
	var results []result
	for _, mode := range modes(b) {
		c, err := classroom.Start(ctx, classroom.Options{Spec: spec, Name: mode, Terminals: slices.Max(sizes), DiskSize: size,
			Unicast: mode == "unicast"})
		if err != nil {
			b.Fatal(err)
		}
		img, err := c.Import(ctx, src, "swarm")
		if err != nil {
			c.Stop()
			b.Fatal(err)
		}
		fmt.Printf("mode %s: image %s, %d MiB, %d bytes stored, ports at %.1f Mbit/s\n", mode, img.Version[:12], size>>20,
			img.StoredBytes, float64(spec.Rate)/1e6)
		var t1 time.Duration
		for _, n := range sizes {
			names := c.Names()[:n]
			if err := c.EmptyDisks(c.Names()); err != nil {
				b.Fatal(err)
			}
			d, err := c.StartDeploy(ctx, classroom.DeployOptions{Image: "swarm", Terminals: names,
				Timeouts: workflows.AgentTimeouts{Silence: 2 * time.Minute, Tries: 2, Total: time.Hour}})
			if err != nil {
				b.Fatal(err)
			}
			run, err := d.Wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if run.Result.Failed != 0 || len(run.Finished) != n {
				b.Fatalf("%s N=%d: %d failed, %d finished: %+v", mode, n, run.Result.Failed, len(run.Finished), run.Result.Terminals)
			}
			if err := c.CheckDisks(img, names); err != nil {
				b.Fatal(err)
			}
			ds := run.Durations()
			r := result{n: n, mode: mode, t: run.Last.Sub(run.Start), p50: classroom.Percentile(ds, 50), p99: classroom.Percentile(ds, 99),
				min: ds[0], egress: float64(run.Egress) / float64(img.StoredBytes), chunks: float64(run.ChunkBytes) / float64(img.StoredBytes)}
			if n == 1 {
				t1 = r.t
			}
			r.tRatio = r.t.Seconds() / t1.Seconds()
			var each []string
			for _, d := range ds {
				each = append(each, fmt.Sprintf("%.1f", d.Seconds()))
			}
			r.details = strings.Join(each, " ")
			fmt.Printf("  N=%-2d T=%6.1fs  completions (s): %s\n", n, r.t.Seconds(), r.details)
			results = append(results, r)
		}
		c.Stop()
	}

	fmt.Printf("\n%-8s %3s %9s %7s %9s %9s %9s %8s %13s %13s\n", "mode", "N", "T(N) s", "T/T(1)", "first s", "p50 s", "p99 s", "p99/p50",
		"egress/stored", "chunks/stored")
	for _, r := range results {
		fmt.Printf("%-8s %3d %9.1f %7.2f %9.1f %9.1f %9.1f %8.2f %13.2f %13.2f\n", r.mode, r.n, r.t.Seconds(), r.tRatio, r.min.Seconds(),
			r.p50.Seconds(), r.p99.Seconds(), r.p99.Seconds()/r.p50.Seconds(), r.egress, r.chunks)
	}
	fmt.Println("(egress: the region's port's tx counter; chunks: the region's tms_transfer_bytes_total{path=agent,direction=out})")
	fmt.Println()
	for _, r := range results {
		fmt.Printf("swarm N=%d mode=%s t_ratio=%.2f p99_p50=%.2f egress_ratio=%.2f\n", r.n, r.mode, r.tRatio, r.p99.Seconds()/r.p50.Seconds(), r.egress)
	}
}

// randomImage writes size random (incompressible) bytes to path.
func randomImage(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'t', 'm', 's'})
	buf := make([]byte, 1<<20)
	for done := int64(0); done < size; done += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), size-done)]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
