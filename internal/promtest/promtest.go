// Package promtest scrapes a Prometheus endpoint in tests and reads its samples, parsing the
// text exposition format the way Prometheus does (expfmt).
//
//	fams := promtest.Scrape(t, "http://127.0.0.1:8301/metrics")
//	n := promtest.Value(fams, "tms_transfer_bytes_total", "path", "peer", "direction", "in")
package promtest

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Families are a scrape's metric families by name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url and parses the exposition it answers.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		t.Fatalf("scrape %s: %s: %s", url, resp.Status, b)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return fams
}

// Value is the value of the sample of name whose labels include labels (name, value pairs),
// summed over every such sample (a histogram: its count); -1 if there is none.
func Value(fams Families, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	sum, found := 0.0, false
	for _, m := range f.GetMetric() {
		if !has(m, labels) {
			continue
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	if !found {
		return -1
	}
	return sum
}

// LabelValues lists every value of every label in fams, for checks that nothing identifying
// leaks into labels.
func LabelValues(fams Families) []string {
	var out []string
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				out = append(out, l.GetName()+"="+l.GetValue())
			}
		}
	}
	return out
}

func has(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Gather reads g's families directly, without HTTP.
func Gather(t testing.TB, g prometheus.Gatherer) Families {
	t.Helper()
	fs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := Families{}
	for _, f := range fs {
		out[f.GetName()] = f
	}
	return out
}
