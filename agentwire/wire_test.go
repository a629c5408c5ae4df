package agentwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"tms/manifest"
)

func TestBatchRoundTrip(t *testing.T) {
	var b []byte
	ids := []manifest.ID{manifest.BLAKE3.Sum([]byte("a")), manifest.BLAKE3.Sum([]byte("b"))}
	b = AppendBatch(b, ids[0], []byte("frame one"))
	b = AppendBatch(b, ids[1], []byte("2"))
	var got []string
	err := ReadBatch(bytes.NewReader(b), func(id manifest.ID, frame []byte) error {
		if id != ids[len(got)] {
			t.Errorf("record %d: id %s", len(got), id.Short())
		}
		got = append(got, string(frame))
		return nil
	})
	if err != nil || len(got) != 2 || got[0] != "frame one" || got[1] != "2" {
		t.Fatalf("read %q, %v", got, err)
	}
	for name, body := range map[string][]byte{
		"cut in header": b[:10],
		"cut in frame":  b[:manifest.IDLen+4+3],
		"empty frame":   AppendBatch(nil, ids[0], nil),
	} {
		if err := ReadBatch(bytes.NewReader(body), func(manifest.ID, []byte) error { return nil }); !errors.Is(err, ErrBatch) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzReadBatch feeds arbitrary upload bodies to the parser a region runs on every capture
// upload: it must return an error or records whose frames fit the limits, never panic.
func FuzzReadBatch(f *testing.F) {
	f.Add(AppendBatch(nil, manifest.BLAKE3.Sum([]byte("x")), []byte("frame")))
	f.Add([]byte{})
	f.Add(make([]byte, manifest.IDLen+4))
	f.Add(append(make([]byte, manifest.IDLen), 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		ReadBatch(bytes.NewReader(b), func(id manifest.ID, frame []byte) error {
			if len(frame) == 0 || len(frame) > MaxFrame {
				t.Fatalf("frame of %d bytes passed", len(frame))
			}
			total += manifest.IDLen + 4 + len(frame)
			return nil
		})
		if total > len(b) {
			t.Fatalf("records of %d bytes from a body of %d", total, len(b))
		}
	})
}

// FuzzHelloReply feeds arbitrary region answers to what the agent service decodes before it
// reads its disk by them: whatever Validate accepts has sample ranges a disk read can take.
func FuzzHelloReply(f *testing.F) {
	f.Add([]byte(`{"version":"` + strings.Repeat("ab", 32) + `","hash":"blake3","samples":[{"index":0,"offset":0,"length":4096,"chunk":""}]}`))
	f.Add([]byte(`{"samples":[{"index":0}]}`))
	f.Add([]byte(`{"version":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r HelloReply
		if json.Unmarshal(b, &r) != nil || r.Validate() != nil {
			return
		}
		if len(r.Samples) > MaxSamples {
			t.Fatalf("%d samples accepted", len(r.Samples))
		}
		for _, s := range r.Samples {
			if s.Offset < 0 || s.Length <= 0 || s.Length > manifest.MaxChunkSize {
				t.Fatalf("sample %+v accepted", s)
			}
		}
	})
}

func TestUpdateKindAndAction(t *testing.T) {
	for _, tc := range []struct {
		action Action
		kind   Kind
		task   bool
		writes bool
	}{
		{ActionLocal, "", false, false},
		{ActionCapture, KindCapture, true, false},
		{ActionDeploy, KindDeploy, true, true},
		{ActionUpdate, KindUpdate, true, true},
		{"format", "", false, false},
	} {
		k, ok := tc.action.Task()
		if k != tc.kind || ok != tc.task || k.Writes() != tc.writes {
			t.Errorf("action %q: kind %q, %v, writes %v", tc.action, k, ok, k.Writes())
		}
	}
	p := Progress{Phase: PhaseWriting, MovedBytes: 7}
	p.FillBytes(KindUpdate)
	if p.FetchedBytes != 7 || p.SentBytes != 0 {
		t.Errorf("an update's moved bytes filled as %+v", p)
	}
}

func TestParseServers(t *testing.T) {
	long := "http://" + strings.Repeat("a", MaxServerURL) + ".example"
	for _, tc := range []struct {
		name string
		list []string
		ok   bool
	}{
		{"none", nil, true},
		{"two", []string{"http://10.0.0.2:8301", "https://srv-b.lab:8443/base"}, true},
		{"no scheme", []string{"10.0.0.2:8301"}, false},
		{"another scheme", []string{"file:///etc/passwd"}, false},
		{"no host", []string{"http://"}, false},
		{"a user", []string{"http://u:p@10.0.0.2"}, false},
		{"a query", []string{"http://10.0.0.2/?x=1"}, false},
		{"too long", []string{long}, false},
		{"empty", []string{""}, false},
		{"too many", strings.Split(strings.Repeat("http://a,", MaxServers+1)[:len("http://a,")*(MaxServers+1)-1], ","), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			us, err := ParseServers(tc.list)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseServers(%q): %v, want ok=%v", tc.list, err, tc.ok)
			}
			if err == nil && len(us) != len(tc.list) {
				t.Fatalf("%d URLs for %d servers", len(us), len(tc.list))
			}
		})
	}
}

// FuzzParseServers: whatever servers a region's answer names, the agent's check never panics,
// and whatever passes is an http(s) URL with a host.
func FuzzParseServers(f *testing.F) {
	f.Add("http://10.0.0.2:8301", "https://b.lab/x")
	f.Add("javascript:alert(1)", "")
	f.Add("http://[::1", "http://u@h")
	f.Fuzz(func(t *testing.T, a, b string) {
		us, err := ParseServers([]string{a, b})
		if err != nil {
			return
		}
		for _, u := range us {
			if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("%q passed", u)
			}
		}
	})
}
