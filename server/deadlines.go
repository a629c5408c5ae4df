package server

import (
	"net/http"
	"time"

	"tms/internal/httpdeadline"
)

// DefaultHTTPIdle is the window of the region's HTTP deadlines.
const DefaultHTTPIdle = 30 * time.Second

// streamRoutes move chunks, manifests and the in-memory OS: megabytes, at whatever pace the
// network allows. Every other route takes and answers a small JSON body or an iPXE script.
var streamRoutes = map[string]bool{
	"GET /v1/versions/{version}/manifest":       true, // transfer: a peer pulls an image
	"GET /v1/versions/{version}/chunks/{chunk}": true,
	"GET /v1/agent/task/manifest":               true, // agentapi: a deploy reads
	"GET /v1/agent/task/chunks/{chunk}":         true,
	"POST /v1/agent/task/frames":                true, // agentapi: many chunks in one answer
	"POST /v1/agent/task/chunks":                true, // agentapi: a capture uploads a batch
	"PUT /v1/agent/task/manifest":               true,
	"GET /boot/{file}":                          true, // bootsvc: kernel and initrd
	"GET /v1/sibling/{kind}/{id}":               true, // sibling: a server of the region lends a chunk or a manifest
}

// Deadlines returns the deadlines of each request to the region's HTTP service, found by its
// route on mux, with idle as their window (0: DefaultHTTPIdle):
//
//   - a stream (chunks, manifests, kernel and initrd) has no bound on its length, but must
//     move 64 KiB in every window, each way (about 2 KiB/s at the default window);
//   - any other request must send its body within one window, and take its answer at 16 KiB
//     per window.
//
// A handler may take as long as it needs before it answers (a command poll waits up to a
// minute). The request line and headers have 10 s (the server's ReadHeaderTimeout).
func Deadlines(mux *http.ServeMux, idle time.Duration) func(*http.Request) httpdeadline.Limits {
	if idle <= 0 {
		idle = DefaultHTTPIdle
	}
	stream := httpdeadline.Limits{Idle: idle, Progress: 64 << 10}
	small := httpdeadline.Limits{Body: idle, Idle: idle, Progress: 16 << 10}
	return func(r *http.Request) httpdeadline.Limits {
		if _, pattern := mux.Handler(r); streamRoutes[pattern] {
			return stream
		}
		return small
	}
}
