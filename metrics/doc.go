// Package metrics holds tms's Prometheus series: one set for a region's server (Region) and one
// for central (Central), each on a registry of its own, so nothing is global and two servers in
// one process (tms dev, tests) keep their figures apart.
//
// Every method is safe on a nil receiver and then does nothing, so a package that is given no
// metrics keeps working:
//
//	m := metrics.NewRegion(metrics.RegionSources{Terminals: inv.CountTerminals, Store: st.Usage})
//	mux.Handle("GET /metrics", m.Handler())
//	m.AddBytes(metrics.PathPeer, metrics.In, n)
//
// Labels take only values from small fixed sets (the constants below, route patterns of the
// server's own mux); anything else is counted under "other". No series carries a MAC, a
// terminal's name, an address or a token: a scrape tells a bystander how busy a region is, and
// nothing it could use against it. docs/operations.md lists every series.
package metrics

import (
	"slices"
)

// Paths bytes and chunks move by.
const (
	PathPeer    = "peer"    // between regions' data endpoints (a share's peer pull)
	PathRelay   = "relay"   // through central's relay storage
	PathAgent   = "agent"   // between a region and its terminals' agents (deploy, update, capture)
	PathSibling = "sibling" // from another server of the same region (what this server's store lacked)
)

// Directions, seen from the server that counts.
const (
	In  = "in"
	Out = "out"
)

// Reasons a chunk is refused.
const (
	ReasonHashMismatch = "hash_mismatch" // its bytes do not hash to its id
	ReasonBadFrame     = "bad_frame"     // not a zstd frame, or it does not decompress
	ReasonTooLarge     = "too_large"     // larger than a chunk may be
	ReasonQuota        = "quota"         // past what the task may upload (a refused batch counts once)
)

// Results of a DHCP request.
const (
	DHCPAnswered    = "answered"
	DHCPNotAdmitted = "not_admitted" // full mode: a MAC that is not enrolled or allow-listed
	DHCPRateLimited = "rate_limited" // a MAC that is not admitted, over its rate
	DHCPAdmitError  = "admit_error"  // the inventory could not say whether the MAC is admitted
	DHCPOverloaded  = "overloaded"   // dropped: too many requests being answered at once
	DHCPMalformed   = "malformed"    // not a BOOTREQUEST of an Ethernet client
	DHCPIgnored     = "ignored"      // no answer due: a RELEASE or DECLINE, not PXE in proxy mode, another segment's relay, no address to offer
	DHCPError       = "error"        // a lease could not be recorded
	DHCPOtherServer = "other_server" // proxy mode: another server of the region answers this PC
)

// Results of a TFTP request.
const (
	TFTPAnswered    = "answered"     // a file sent completely
	TFTPProbe       = "size_probe"   // the client asked for the size only (UEFI firmware does first)
	TFTPNotAllowed  = "not_allowed"  // a name that is not allow-listed, or not a plain name
	TFTPNotFound    = "not_found"    // allow-listed but not in the directory
	TFTPWriteDenied = "write_denied" // a write request: tms's TFTP is read-only
	TFTPFailed      = "failed"       // the transfer broke off (timeout, shutdown)
)

var (
	paths       = []string{PathPeer, PathRelay, PathAgent, PathSibling}
	directions  = []string{In, Out}
	reasons     = []string{ReasonHashMismatch, ReasonBadFrame, ReasonTooLarge, ReasonQuota}
	dhcpResults = []string{DHCPAnswered, DHCPNotAdmitted, DHCPRateLimited, DHCPAdmitError, DHCPOverloaded, DHCPMalformed, DHCPIgnored, DHCPError, DHCPOtherServer}
	tftpResults = []string{TFTPAnswered, TFTPProbe, TFTPNotAllowed, TFTPNotFound, TFTPWriteDenied, TFTPFailed}
	statusClass = []string{"2xx", "3xx", "4xx", "5xx"}
	otherLabel  = "other"
)

// oneOf returns v if it is in set, else "other": a label never takes a value a caller made up.
func oneOf(v string, set []string) string {
	if slices.Contains(set, v) {
		return v
	}
	return otherLabel
}
