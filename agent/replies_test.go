package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"tms/agentwire"
	"tms/manifest"
	"tms/store"
)

// FuzzRegionReplies answers the agent's requests with arbitrary statuses and bodies, as a rogue
// server on the segment could: the agent never panics, and every failure is an *APIError, a
// store error (unreachable, cut short, too long) or a plain decoding error, so the agent's loop
// can tell a refusal from a fault.
func FuzzRegionReplies(f *testing.F) {
	f.Add(uint8(0), 200, []byte(`{"action":"deploy","task":"t","token":"x"}`))
	f.Add(uint8(1), 200, []byte(`{"id":"t","kind":"deploy","chunk_size":-1,"hash":"nonsense"}`))
	f.Add(uint8(2), 200, []byte(`{"command":"format-disk"}`))
	f.Add(uint8(3), 409, []byte(`{"error":"task t is already done","retry":true}`))
	f.Add(uint8(4), 200, []byte(`{"missing":["zz"]}`))
	f.Add(uint8(5), 425, []byte(`not json`))
	f.Add(uint8(6), 200, []byte{})
	f.Add(uint8(1), 200, []byte(`{"id":"t","kind":"update","base":"zz","base_signature":"AAAA","base_signer":"k"}`))
	f.Add(uint8(7), 200, []byte(`{"format":"tms.image.v1","hash":"blake3","disk_size":1,"chunk_size":65536,"chunks":[""]}`))
	f.Add(uint8(7), 404, []byte(`{"error":"no manifest"}`))
	f.Fuzz(func(t *testing.T, which uint8, status int, body []byte) {
		if status < 200 || status > 599 {
			status = 200
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			w.Write(body)
		}))
		defer srv.Close()
		u, _ := url.Parse(srv.URL)
		c := &Client{Region: u, MAC: "52:54:00:12:34:56", Token: "t", Settle: 1}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var err error
		switch which % 8 {
		case 0:
			_, err = c.Boot(ctx, agentwire.BootRequest{MAC: c.MAC})
		case 1:
			_, err = c.Task(ctx)
		case 2:
			_, err = c.Command(ctx, "0s")
		case 3:
			_, err = c.GetChunkFrame(ctx, manifest.ID{})
		case 4:
			_, err = c.Missing(ctx, []manifest.ID{{1}})
		case 5:
			if status == http.StatusTooEarly {
				cancel() // Publish and Done offer again while the region says too early
			}
			_, err = c.Done(ctx, agentwire.Done{Verified: true})
		case 6:
			_, err = c.GetManifestBytes(ctx, manifest.ID{})
		case 7:
			_, err = c.GetBaseManifestBytes(ctx)
		}
		if err == nil {
			return
		}
		var ae *APIError
		if errors.As(err, &ae) || store.Kind(err) != nil || errors.Is(err, context.Canceled) {
			return
		}
		if status == http.StatusOK {
			return // a decoding error of an answer that claimed success
		}
		t.Fatalf("request %d, status %d, body %q: untyped error %v", which%8, status, body, err)
	})
}
