// Package share measures what sharing a new version costs: a region that holds version N pulls
// N+1 from a peer over HTTP (with a grant), and the bytes moved are reported against the
// compressed bytes of the chunks that changed between N and N+1. Run it with
// scripts/bench share.
package share

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"tms/internal/sampledisk"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/signing"
	"tms/transfer"
)

func BenchmarkShareNextVersion(b *testing.B) {
	size := int64(512 << 20)
	if s := os.Getenv("TMS_BENCH_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	ctx := context.Background()
	key, err := signing.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	for _, pct := range []float64{0.01, 0.001} {
		b.Run(strconv.FormatFloat(pct*100, 'f', -1, 64)+"%", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				a, _ := storetest.Dir(b)
				disk := storetest.SampleDisk(b, size, 1)
				v1 := storetest.Import(b, a, disk, "lab")
				mux := http.NewServeMux()
				(&transfer.Handler{Store: a, Region: "region-a", CentralKey: key.Public()}).Routes(mux)
				peer := httptest.NewServer(mux)
				base, _ := url.Parse(peer.URL)
				dst, _ := storetest.Dir(b)
				src := func(v manifest.ID) *transfer.HTTPSource {
					return &transfer.HTTPSource{Base: base, Version: v, Grant: key.MintGrant(signing.Grant{Version: v, Audience: "region-b", Server: "region-a", Expires: time.Now().Add(time.Hour)})}
				}
				if _, err := transfer.Copy(ctx, src(v1.Version.ID), dst, v1.Version.ID, transfer.Options{}); err != nil {
					b.Fatal(err)
				}
				if _, err := sampledisk.Mutate(disk, pct, 2); err != nil {
					b.Fatal(err)
				}
				v2 := storetest.Import(b, a, disk, "lab")
				b.StartTimer()
				start := time.Now()
				res, err := transfer.Copy(ctx, src(v2.Version.ID), dst, v2.Version.ID, transfer.Options{})
				if err != nil {
					b.Fatal(err)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				peer.Close()
				// v2's AddedBytes are the compressed bytes of the chunks that changed (new to
				// the store that held v1).
				b.ReportMetric(float64(res.MovedBytes)/float64(v2.Stats.AddedBytes), "moved/changed")
				b.ReportMetric(float64(res.MovedBytes)/1e6, "moved_MB")
				b.ReportMetric(float64(v2.Stats.AddedBytes)/1e6, "changed_MB")
				b.ReportMetric(float64(res.MovedBytes)/elapsed.Seconds()/1e6, "MB/s")
				b.StartTimer()
			}
		})
	}
}
