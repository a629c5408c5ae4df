package cli

import (
	"bytes"
	"strings"
	"testing"

	"tms/devenv"
	"tms/devtemporal"
)

// The commands tms dev suggests must run as printed: on a Temporal port other than the
// CLI's default, they name the frontend with a flag the CLI accepts, and reach it.
func TestDevTryCommandsRunAsPrinted(t *testing.T) {
	srv, err := devtemporal.Start(devtemporal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if srv.Address() == devFrontend {
		t.Fatalf("the test's Temporal is at %s, the CLI's default: the hint would need no flag", devFrontend)
	}
	src := devenv.Terminal{Region: "region-a", Name: "pc1", Disk: "/tmp/pc1.raw"}
	dst := devenv.Terminal{Region: "region-b", Name: "pc2", Disk: "/tmp/pc2.raw"}
	for _, tc := range []struct {
		name, addr string
		wantFlags  string // what every suggested tms command line starts with
	}{
		{"default port", devFrontend, "bin/tms "},
		{"other port", srv.Address(), "bin/tms --temporal " + srv.Address() + " "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			writeDevTry(&b, tc.addr, "127.0.0.1:8233", "region-a", "region-b", src, dst, "/tmp/tms-dev")
			var lines []string
			for l := range strings.Lines(b.String()) {
				if l = strings.TrimSpace(l); strings.HasPrefix(l, "bin/tms ") {
					lines = append(lines, l)
				}
			}
			if len(lines) < 5 {
				t.Fatalf("fewer commands than expected in:\n%s", b.String())
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, tc.wantFlags) {
					t.Errorf("suggested %q, want it to start with %q", l, tc.wantFlags)
				}
				// Every suggested command line parses: its flags exist where they are given.
				args := strings.Fields(l)[1:]
				cmd, rest, err := (&App{}).Command().Find(args)
				if err == nil {
					err = cmd.ParseFlags(rest)
				}
				if err != nil {
					t.Errorf("tms does not accept %q: %v", l, err)
				}
			}
		})
	}
	// And the one that needs no worker runs, against the server the flag names.
	var b bytes.Buffer
	writeDevTry(&b, srv.Address(), "127.0.0.1:8233", "region-a", "region-b", src, dst, "/tmp/tms-dev")
	for l := range strings.Lines(b.String()) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "bin/tms ") && strings.HasSuffix(l, "task ls --all") {
			must(t, newRunner(nil), strings.Fields(l)[1:]...)
			return
		}
	}
	t.Fatalf("no task ls in:\n%s", b.String())
}
