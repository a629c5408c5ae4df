// Package link measures how well one deploy uses the link to its terminal: one tms-agent
// process behind one shaped port (package internal/classroom), the region in another namespace.
// Run it as root with scripts/bench link.
//
// The image is a compressible sample disk (internal/sampledisk), so the agent fetches stored
// (zstd) bytes and writes more disk bytes than it fetched. A deploy that kept the link busy
// would write disk bytes at link rate × compression ratio (disk bytes ÷ stored bytes); the
// benchmark reports the deploy's disk rate as a fraction of that (vs_link). As the baseline, the
// same compressed bytes — a file holding every stored chunk frame of the image — are fetched with
// curl over the same link from a plain HTTP file server in the region's namespace, and the
// deploy is reported as a ratio to curl too (vs_curl: curl's time ÷ the deploy's). The deploy is
// timed from the DeployImage workflow's start to the agent having verified the disk and
// reported, so it includes the wake-up, the agent's boot request and the read-back.
//
// $TMS_LINK_RATE sets the port rate (default 16mbit), $TMS_BENCH_SIZE the disk size (default
// 64 MiB here), $COUNT the number of runs (default 3).
package link

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tms/internal/benchutil"
	"tms/internal/classroom"
	"tms/internal/sampledisk"
	"tms/workflows"
)

func BenchmarkLink(b *testing.B) {
	classroom.Bench(b, "BenchmarkLink", func() classroom.PrepareOptions {
		return classroom.PrepareOptions{Terminals: 1, Rate: classroom.RateEnv(b, "TMS_LINK_RATE", "16mbit")}
	}, measure)
}

// measure runs in the region's namespace.
func measure(b *testing.B, spec classroom.Spec) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	size := int64(64 << 20)
	if os.Getenv("TMS_BENCH_SIZE") != "" {
		size = benchutil.DiskSize(b)
	}
	runs := 3
	if s := os.Getenv("COUNT"); s != "" {
		if runs, _ = strconv.Atoi(s); runs < 1 {
			b.Fatalf("COUNT=%q: want a number of runs", s)
		}
	}
	src := filepath.Join(spec.Dir, "image.raw")
	if err := sampledisk.Write(src, sampledisk.Options{Size: size, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	c, err := classroom.Start(ctx, classroom.Options{Spec: spec, Terminals: 1, DiskSize: size})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	img, err := c.Import(ctx, src, "link")
	if err != nil {
		b.Fatal(err)
	}
	frames := filepath.Join(spec.Dir, "frames")
	if err := c.WriteFrames(ctx, img, frames); err != nil {
		b.Fatal(err)
	}
	if fi, err := os.Stat(frames); err != nil || fi.Size() != img.StoredBytes {
		b.Fatalf("the frames file holds %v bytes, the image %d stored: %v", fi.Size(), img.StoredBytes, err)
	}
	url, stop, err := serveFile(c.Lab.Hosts[0].Addr.String(), frames)
	if err != nil {
		b.Fatal(err)
	}
	defer stop()

	linkBytes := float64(spec.Rate) / 8 // bytes/s
	compression := float64(img.DiskSize) / float64(img.StoredBytes)
	fmt.Printf("image %s: %d MiB on disk, %d bytes stored (compression %.2f); port at %.1f Mbit/s: a full link deploys %.2f MB/s of disk\n",
		img.Version[:12], size>>20, img.StoredBytes, compression, float64(spec.Rate)/1e6, linkBytes*compression/1e6)
	fmt.Printf("\n%4s %10s %12s %8s %8s %12s %8s\n", "run", "deploy s", "disk MB/s", "vs_link", "curl s", "curl vs_link", "vs_curl")
	name := c.Names()[0]
	var sumLink, sumCurl float64
	for i := range runs {
		if err := c.EmptyDisks([]string{name}); err != nil {
			b.Fatal(err)
		}
		d, err := c.StartDeploy(ctx, classroom.DeployOptions{Image: "link", Terminals: []string{name},
			Timeouts: workflows.AgentTimeouts{Silence: 2 * time.Minute, Tries: 2, Total: time.Hour}})
		if err != nil {
			b.Fatal(err)
		}
		run, err := d.Wait(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if run.Result.Failed != 0 || len(run.Finished) != 1 {
			b.Fatalf("deploy: %+v", run.Result)
		}
		if err := c.CheckDisks(img, []string{name}); err != nil {
			b.Fatal(err)
		}
		deploy := run.Last.Sub(run.Start)

		start := time.Now()
		out, err := c.Lab.Command(ctx, 1, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url).CombinedOutput()
		curl := time.Since(start)
		if err != nil || strings.TrimSpace(string(out)) != strconv.FormatInt(img.StoredBytes, 10) {
			b.Fatalf("curl in the terminal's namespace: %v: %s", err, out)
		}
		diskRate := float64(img.DiskSize) / deploy.Seconds()
		vsLink := diskRate / (linkBytes * compression)
		curlLink := float64(img.StoredBytes) / curl.Seconds() / linkBytes
		vsCurl := curl.Seconds() / deploy.Seconds()
		sumLink += vsLink
		sumCurl += vsCurl
		fmt.Printf("%4d %10.2f %12.2f %8.2f %8.2f %12.2f %8.2f\n", i+1, deploy.Seconds(), diskRate/1e6, vsLink, curl.Seconds(), curlLink, vsCurl)
	}
	fmt.Printf("\nlink rate=%.0fmbit compression=%.2f vs_link=%.2f vs_curl=%.2f\n", float64(spec.Rate)/1e6, compression,
		sumLink/float64(runs), sumCurl/float64(runs))
}

// concat writes the files one after the other into path.

// serveFile serves path over plain HTTP on host:0 and returns its URL.
func serveFile(host, path string) (string, func(), error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/frames", func() { srv.Close() }, nil
}
