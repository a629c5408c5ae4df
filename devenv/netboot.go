package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"tms/agent"
	"tms/agent/initos"
	"tms/bootenv"
)

// A simulated terminal's network boot (Options.NetBoot) plays what a PC's firmware, iPXE and
// kernel do before the agent runs, as far as a process can without booting a kernel:
//
//   - it asks its region's boot HTTP service for its iPXE script (GET /boot/ipxe?mac=…), as
//     iPXE does, which claims the terminal's boot into its task;
//   - a script that boots the local disk sends it to its installed OS (the agent service);
//   - otherwise it fetches the kernel and initrd the script names, from the region only, and
//     checks them: the kernel must be a bzImage (its setup header, read by
//     bootenv.KernelVersion), the initrd a gzip'd cpio whose /init is a static ELF executable
//     (bootenv.CheckInitrd). A broken one makes the terminal hang, as a real PC would: it never
//     says hello, and stays so until tms dev stops (a real PC needs its reset button);
//   - it reads the script's kernel command line with the agent's own parser (initos), so the
//     agent gets the boot's token and the bootenv version (tms.bootenv) as the real /init
//     gives them.
//
// What it does not do: run the kernel or the initrd's /init. The agent that then runs is tms
// dev's own build, whatever agent the initrd holds.

// maxScript bounds an iPXE script a simulated terminal reads.
const maxScript = 64 << 10

// bootScript is what a simulated terminal takes from an iPXE script: the kernel and initrd URLs
// and the kernel command line; all empty for a script that boots the local disk.
type bootScript struct {
	Kernel, Initrd, Cmdline string
}

// parseScript reads the kernel and initrd lines of a script the region rendered (task.ipxe):
// "kernel URL ARGS… || goto failed" and "initrd --name initrd URL || goto failed". A script
// with neither boots the local disk; one with only one of them is refused.
func parseScript(s string) (bootScript, error) {
	if len(s) > maxScript {
		return bootScript{}, fmt.Errorf("iPXE script of %d bytes, more than %d", len(s), maxScript)
	}
	if !strings.HasPrefix(s, "#!ipxe") {
		return bootScript{}, errors.New("not an iPXE script")
	}
	var b bootScript
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "||")
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "kernel":
			if b.Kernel != "" {
				return bootScript{}, errors.New("iPXE script names two kernels")
			}
			b.Kernel, b.Cmdline = f[1], strings.Join(f[2:], " ")
		case len(f) == 4 && f[0] == "initrd" && f[1] == "--name":
			if b.Initrd != "" {
				return bootScript{}, errors.New("iPXE script names two initrds")
			}
			b.Initrd = f[3]
		case len(f) >= 1 && (f[0] == "kernel" || f[0] == "initrd"):
			return bootScript{}, fmt.Errorf("iPXE script line %.80q is not what tms writes", line)
		}
	}
	if (b.Kernel == "") != (b.Initrd == "") {
		return bootScript{}, errors.New("iPXE script names a kernel without an initrd or the reverse")
	}
	return b, nil
}

// netBoot returns the network boot of terminal t (agent.Agent.NetBoot).
func (e *Env) netBoot(t Terminal, hc *http.Client) func(ctx context.Context) (agent.NetBootResult, error) {
	return func(ctx context.Context) (agent.NetBootResult, error) {
		region, err := url.Parse(t.Endpoint)
		if err != nil {
			return agent.NetBootResult{}, err
		}
		script, err := fetch(ctx, hc, region, t.Endpoint+"/boot/ipxe?"+url.Values{"mac": {t.MAC}}.Encode(), maxScript)
		if err != nil {
			// iPXE without a script: the PC's firmware moves on to the local disk.
			e.log.Warn("no iPXE script: booting the local disk", "terminal", t.Name, "err", err)
			return agent.NetBootResult{}, nil
		}
		b, err := parseScript(string(script))
		if err != nil {
			return agent.NetBootResult{}, err
		}
		if b.Kernel == "" {
			return agent.NetBootResult{}, nil
		}
		kernel, err := fetch(ctx, hc, region, b.Kernel, bootenv.MaxKernelSize)
		if err != nil {
			return agent.NetBootResult{}, fmt.Errorf("kernel: %w", err)
		}
		if _, err := bootenv.KernelVersion(kernel); err != nil {
			return agent.NetBootResult{}, fmt.Errorf("kernel %s: %w", b.Kernel, err)
		}
		initrd, err := fetch(ctx, hc, region, b.Initrd, bootenv.MaxInitrdSize)
		if err != nil {
			return agent.NetBootResult{}, fmt.Errorf("initrd: %w", err)
		}
		if err := bootenv.CheckInitrd(initrd); err != nil {
			return agent.NetBootResult{}, fmt.Errorf("initrd %s: %w", b.Initrd, err)
		}
		cfg, err := initos.ParseCmdline(b.Cmdline)
		if err != nil {
			return agent.NetBootResult{}, err
		}
		e.log.Info("network boot: the in-memory OS checked, the agent starts", "terminal", t.Name, "bootenv", cfg.BootEnv)
		return agent.NetBootResult{Token: cfg.Token, BootEnv: cfg.BootEnv}, nil
	}
}

// fetch GETs u, which must be on the region's host, reading at most limit bytes.
func fetch(ctx context.Context, hc *http.Client, region *url.URL, u string, limit int64) ([]byte, error) {
	pu, err := url.Parse(u)
	if err != nil || pu.Host != region.Host || pu.Scheme != region.Scheme {
		return nil, fmt.Errorf("%.120q is not on the region's boot service %s", u, region.Host)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(msg)))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: more than %d bytes", u, limit)
	}
	return b, nil
}
