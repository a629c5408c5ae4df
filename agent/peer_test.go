package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tms/agentwire"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
	"tms/swarm"
)

// TestPeerServesOnlyWhatATokenOpens starts a member's peer service and asks it for chunks as
// other hosts on the segment could: only a requester whose certificate holds the key its token
// names, with a token the region signed for this version and its address, gets a chunk the
// member holds.
func TestPeerServesOnlyWhatATokenOpens(t *testing.T) {
	ctx := context.Background()
	st, _ := storetest.Dir(t)
	disk := storetest.SampleDisk(t, 4<<20, 5)
	v := storetest.Import(t, st, disk, "lab").Version
	chunks := swarm.Chunks(v.Manifest)
	srv, err := newPeerServer(v, chunks, disk, "127.0.0.1:0", testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	signer := &swarm.Signer{}
	keys, _ := signer.PublicKeys()
	srv.setKeys(keys)
	srv.held(0, nil)

	_, cert, err := peerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	mine := cert.PrivateKey.(ed25519.PrivateKey).Public().(ed25519.PublicKey)
	lo := netip.MustParseAddr("127.0.0.1")
	token := func(ver manifest.ID, ip netip.Addr, key ed25519.PublicKey) string {
		tok, err := signer.Sign(swarm.Token{Version: ver, Member: "deploy/x", IP: ip, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	other, _, _ := ed25519.GenerateKey(nil)
	foreign := &swarm.Signer{}
	forged, _ := foreign.Sign(swarm.Token{Version: v.ID, Member: "deploy/x", IP: lo, Key: mine})
	peer := agentwire.SwarmPeer{Member: "deploy/p", Addr: srv.ln.Addr().String(), Key: srv.PublicKey()}
	pc := &peerClient{cert: cert, timeout: 5 * time.Second}
	defer pc.close()

	frame, err := pc.get(ctx, peer, token(v.ID, lo, mine), chunks[0])
	if err != nil {
		t.Fatalf("a good request: %v", err)
	}
	data, err := store.NewCodec(0).Decompress(nil, frame, manifest.MaxChunkSize)
	if err != nil || v.Manifest.Hash.Sum(data) != chunks[0] {
		t.Fatalf("the chunk served is not the chunk: %v", err)
	}
	for _, tt := range []struct {
		name, tok string
		chunk     manifest.ID
		want      string
	}{
		{"a token for another version", token(manifest.ID{7}, lo, mine), chunks[0], "403"},
		{"a token given to another address", token(v.ID, netip.MustParseAddr("10.98.0.77"), mine), chunks[0], "403"},
		{"a token for another key", token(v.ID, lo, other), chunks[0], "403"},
		{"a token the region did not sign", forged, chunks[0], "403"},
		{"no token", "", chunks[0], "403"},
		{"a chunk the member does not hold yet", token(v.ID, lo, mine), chunks[1], "404"},
		{"a chunk of no version it writes", token(v.ID, lo, mine), manifest.ID{9}, "404"},
	} {
		if _, err := pc.get(ctx, peer, tt.tok, tt.chunk); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.want)
		}
	}

	// Without a client certificate there is no TLS session at all.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Get("https://" + peer.Addr + agentwire.PeerChunkPath + chunks[0].String())
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a request without a certificate got %s", resp.Status)
	}
	// A server holding another key than the region named is refused by the client.
	wrong := peer
	wrong.Key = other
	wrong.Member = "deploy/q"
	if _, err := pc.get(ctx, wrong, token(v.ID, lo, mine), chunks[0]); err == nil || !strings.Contains(err.Error(), "does not hold the key") {
		t.Errorf("a peer with another key: %v", err)
	}
	if errors.Is(err, ErrBadPeer) {
		t.Error("a TLS refusal counted as bad bytes")
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}
