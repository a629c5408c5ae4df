package sibling_test

import (
	"testing"
	"time"

	"tms/manifest"
	"tms/sibling"
	"tms/signing"
	"tms/store"
)

// FuzzCheckToken: whatever a peer puts in its Authorization header, checking it never panics,
// and only the token made for the request passes.
func FuzzCheckToken(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	good := sibling.Sign(secret, "srv-1", "GET", "/p", now)
	for _, s := range []string{good, "", "TMS-Sibling", "TMS-Sibling a 1 00", "TMS-Sibling a 99999999999999999999 " + good[len(good)-64:], good + " x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := sibling.Check(secret, h, "GET", "/p", now)
		if err == nil && h != good {
			// Another string that passes must carry the same MAC over the same fields.
			if tok.From != "srv-1" {
				t.Fatalf("%q passed as from %q", h, tok.From)
			}
		}
	})
}

// FuzzCheckFrame: any bytes a sibling sends as a chunk are checked without panic, and only a
// frame of the chunk's own bytes passes.
func FuzzCheckFrame(f *testing.F) {
	codec := store.NewCodec(0)
	data := []byte("a chunk's bytes")
	id := manifest.BLAKE3.Sum(data)
	frame := codec.Compress(nil, data)
	f.Add(frame)
	f.Add([]byte{})
	f.Add(frame[:len(frame)/2])
	f.Add(codec.Compress(nil, []byte("other bytes")))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := sibling.CheckFrame(codec, id, b); err == nil {
			got, derr := codec.Decompress(nil, b, manifest.MaxChunkSize)
			if derr != nil || string(got) != string(data) {
				t.Fatalf("frame %x passed for other bytes", b)
			}
		}
	})
}

// FuzzCheckVersion: any manifest and signature bytes a sibling sends are checked without panic.
func FuzzCheckVersion(f *testing.F) {
	key, _ := signing.GenerateKey()
	m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, DiskSize: 1 << 16, ChunkSize: 1 << 16, Chunks: []manifest.ID{{}}}
	m.Meta.Name, m.Meta.Created = "lab", time.Unix(1_800_000_000, 0).UTC()
	enc, err := manifest.Encode(m)
	if err != nil {
		f.Fatal(err)
	}
	id := manifest.VersionID(manifest.BLAKE3, enc)
	f.Add(enc, key.SignVersion(id).Encode())
	f.Add(enc, []byte(`{}`))
	f.Add([]byte(`{}`), key.SignVersion(id).Encode())
	f.Fuzz(func(t *testing.T, b, sig []byte) {
		if _, err := sibling.CheckVersion(key.Public(), id, b, sig); err == nil && string(b) != string(enc) {
			t.Fatalf("another manifest passed for %s", id.Short())
		}
	})
}

// FuzzParseCommandRequest: whatever body a sibling sends to the command route, parsing it
// never panics, and what passes names a normalized MAC and a reboot or poweroff.
func FuzzParseCommandRequest(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:00:00:01","command":"reboot"}`))
	f.Add([]byte(`{"mac":"52-54-00-00-00-01","command":"poweroff"}`))
	f.Add([]byte(`{"mac":"x","command":"reboot"}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:01","command":"format"}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:01","command":"reboot"} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := sibling.ParseCommandRequest(b)
		if err != nil {
			return
		}
		if len(req.MAC) != 17 || (req.Command != "reboot" && req.Command != "poweroff") {
			t.Fatalf("%q passed as %+v", b, req)
		}
	})
}
