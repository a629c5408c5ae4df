package agentwire

import (
	"fmt"
	"net/url"
)

// A region may have several servers, one database among them: a terminal's token and agent
// key are good at each. The region's answers to an agent (BootReply, TaskInfo, HelloReply)
// name its other healthy servers, and an agent whose server stops answering (connection
// errors or 5xx for a few seconds) carries on with the next one, its task and token the same.

// MaxServers bounds the servers one answer names; MaxServerURL one endpoint's length.
const (
	MaxServers   = 8
	MaxServerURL = 512
)

// ParseServers checks the servers a region's answer names and returns them as URLs: each an
// absolute http or https URL with a host and nothing else of its own (no user, query or
// fragment), at most MaxServers, at most MaxServerURL bytes each. Any other is an error: the
// agent takes none of a list it cannot trust whole.
func ParseServers(list []string) ([]*url.URL, error) {
	if len(list) > MaxServers {
		return nil, fmt.Errorf("the region names %d servers; at most %d", len(list), MaxServers)
	}
	out := make([]*url.URL, 0, len(list))
	for _, s := range list {
		if len(s) == 0 || len(s) > MaxServerURL {
			return nil, fmt.Errorf("a server's endpoint of %d bytes; want 1 to %d", len(s), MaxServerURL)
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("server %.64q: %v", s, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return nil, fmt.Errorf("server %.64q is not an http(s) endpoint with a host and no user, query or fragment", s)
		}
		out = append(out, u)
	}
	return out, nil
}
