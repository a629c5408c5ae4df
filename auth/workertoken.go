package auth

import (
	"context"
	"sync"
	"time"

	"tms/signing"
)

// WorkerTokens mints a tms server's own worker token with central's key, and a fresh one when
// less than a third of the last one's life is left: its Token method is what
// client.NewAPIKeyDynamicCredentials calls before every request.
type WorkerTokens struct {
	Key *signing.PrivateKey
	// Name is what the log and the authorizer call the worker ("central", "region:room-1").
	Name string
	// Regions scope a region's worker to its queues; empty for central's.
	Regions []string
	// Life of each token (default 1h).
	Life time.Duration
	Now  func() time.Time

	mu  sync.Mutex
	tok string
	exp time.Time
	iat time.Time
}

// Token returns a valid worker token.
func (w *WorkerTokens) Token(context.Context) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if w.Now != nil {
		now = w.Now()
	}
	life := w.Life
	if life <= 0 {
		life = time.Hour
	}
	if w.tok != "" && now.Before(w.exp.Add(-w.exp.Sub(w.iat)/3)) {
		return w.tok, nil
	}
	tok, c, err := Mint(w.Key, Claims{Subject: w.Name, Role: RoleWorker, Regions: w.Regions}, now, life)
	if err != nil {
		return "", err
	}
	w.tok, w.exp, w.iat = tok, c.Expires, c.IssuedAt
	return tok, nil
}
