package cli

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"tms/devenv"
	"tms/settings"
)

// devCommand runs all of tms on this machine until it is interrupted.
func (a *App) devCommand() *cobra.Command {
	var o devenv.Options
	var regions string
	var noAuth, noNetBoot bool
	var storeCapacity string
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run all of tms on this machine: Temporal and its UI, central, two regions and simulated terminals",
		Long: `Run all of tms in this one process until Ctrl-C: an embedded Temporal server (state in SQLite files
under --data) with its web UI, the central server, regional servers with their own stores, databases
and HTTP services on loopback, and simulated terminals (the real agent, each with a disk file; the
first terminal of the first region starts with a sample disk). Running it again on the same --data
continues where it stopped.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			o.Regions = strings.Split(regions, ",")
			var err error
			if o.StoreCapacity, err = settings.ParseSize(storeCapacity); err != nil {
				return usageError{fmt.Errorf("--store-capacity: %w", err)}
			}
			o.Log = a.log
			o.Version = Version
			// tms dev runs with tms's authorizer: every command needs a login.
			o.Auth = !noAuth
			// Simulated terminals network boot what their iPXE script names (docs/boot.md).
			o.NetBoot = !noNetBoot
			o.TemporalLevel = slog.LevelError
			if o.Terminals == 0 {
				o.Terminals = -1
			}
			dataDir, err := filepath.Abs(o.DataDir)
			if err != nil {
				return err
			}
			o.DataDir = dataDir
			fmt.Fprintf(a.Stderr, "starting tms dev in %s ...\n", o.DataDir)
			env, err := devenv.Start(ctx, o)
			if err != nil {
				return err
			}
			defer func() {
				fmt.Fprintln(a.Stderr, "stopping ...")
				env.Stop()
				fmt.Fprintln(a.Stderr, "stopped; run tms dev again to continue")
			}()
			a.printDevEnv(env, o.DataDir)
			return env.Wait(ctx)
		},
	}
	f := c.Flags()
	f.StringVar(&o.DataDir, "data", "tms-dev", "directory for everything tms dev keeps")
	f.BoolVar(&noNetBoot, "no-netboot", false, "simulated terminals skip the simulated network boot (iPXE script, kernel and initrd checks)")
	f.IntVar(&o.TemporalPort, "temporal-port", 7233, "Temporal frontend port on 127.0.0.1 (-1: any free port)")
	f.IntVar(&o.UIPort, "ui-port", 8233, "Temporal UI port on 127.0.0.1 (-1: any free port)")
	f.IntVar(&o.CentralPort, "central-port", 8300, "central's HTTP port on 127.0.0.1: /healthz, /metrics, login and users (-1: any free port)")
	f.IntVar(&o.RegionPortBase, "region-port", 8301, "HTTP port of the first region, the next ones follow (-1: any free ports)")
	f.BoolVar(&noAuth, "no-auth", false, "run Temporal without tms's authorizer: anyone may do anything, no login needed")
	f.StringVar(&regions, "regions", "region-a,region-b", "region ids, comma-separated")
	f.IntVar(&o.Terminals, "terminals", 3, "simulated terminals per region")
	f.Int64Var(&o.DiskSize, "disk-size", 64<<20, "size of each simulated terminal's disk in bytes")
	f.StringVar(&storeCapacity, "store-capacity", "", "each region's store capacity, like 512MiB, to show eviction (default: the filesystem's)")
	c.AddCommand(a.devStoreDemo(), a.devDisk(), a.devMutate())
	return c
}

func (a *App) printDevEnv(env *devenv.Env, dataDir string) {
	w := a.Stdout
	fmt.Fprintf(w, "tms dev is running; Ctrl-C stops it, running it again continues.\n\n")
	fmt.Fprintf(w, "  Temporal     %s (namespace %s)\n", env.TemporalAddress(), env.Namespace)
	fmt.Fprintf(w, "  Temporal UI  http://%s\n", env.UIAddress())
	fmt.Fprintf(w, "  central      catalog %s, relay store %s\n", filepath.Join(dataDir, "central", "catalog.db"), filepath.Join(dataDir, "central", "relay"))
	fmt.Fprintf(w, "  %-12s signing key %s (key id %s)\n", "", filepath.Join(dataDir, "central.key"), env.CentralKey.ID())
	fmt.Fprintf(w, "  %-12s HTTP %s (login, users, /metrics)\n", "", env.CentralURL())

	for _, id := range env.RegionIDs {
		r := env.Regions[id]
		var names []string
		for _, t := range env.Terminals {
			if t.Region == id {
				names = append(names, t.Name)
			}
		}
		fmt.Fprintf(w, "  %-12s %s, store %s, metrics %s\n", id, r.Endpoint(), r.Store, r.MetricsURL())
		if len(names) > 0 {
			fmt.Fprintf(w, "  %-12s terminals %s (group lab), disks in %s\n", "", strings.Join(names, ", "), filepath.Join(dataDir, id, "terminals"))
		}
	}
	if env.Auth() {
		writeDevLogin(w, env, dataDir)
	}
	if len(env.RegionIDs) < 2 || len(env.Terminals) == 0 {
		return
	}
	first, second := env.RegionIDs[0], env.RegionIDs[1]
	src := env.Terminals[0]
	var dst devenv.Terminal
	for _, t := range env.Terminals {
		if t.Region == second {
			dst = t
			break
		}
	}
	writeDevTry(w, env.TemporalAddress(), env.UIAddress(), first, second, src, dst, dataDir)
}

// writeDevTry prints the commands to try against a running tms dev. When its Temporal is not at
// devFrontend, where the CLI looks by default, each command names it with the global --temporal.
func writeDevTry(w io.Writer, temporalAddr, uiAddr, first, second string, src, dst devenv.Terminal, dataDir string) {
	addr := ""
	if temporalAddr != devFrontend {
		addr = " --temporal " + temporalAddr
	}
	fmt.Fprintf(w, `
Try, in another terminal (after: go build -o bin/tms ./cmd/tms):
  bin/tms%[1]s status
  bin/tms%[1]s region ls
  bin/tms%[1]s terminal ls --region %[2]s
  bin/tms%[1]s image capture --region %[2]s --terminal %[4]s --wait classroom
  bin/tms%[1]s image ls
  bin/tms%[1]s deploy --region %[3]s --group lab --wait classroom
  cmp %[5]s %[6]s && echo identical
  bin/tms%[1]s dev mutate %[5]s
  bin/tms%[1]s image capture --region %[2]s --terminal %[4]s --wait classroom
  bin/tms%[1]s update --region %[3]s --group lab --wait classroom
  bin/tms%[1]s task ls --all
and watch the workflows in the Temporal UI at http://%[7]s
The in-memory OS, region by region behind a canary (docs/boot.md, "In tms dev"):
  bin/tms%[1]s bootenv sample --out %[8]s
  bin/tms%[1]s bootenv publish %[8]s --region %[2]s --store %[9]s
  bin/tms%[1]s bootenv rollout VERSION --regions %[2]s,%[3]s --wait
  bin/tms%[1]s bootenv ls
`, addr, first, second, src.Name, src.Disk, dst.Disk, uiAddr, filepath.Join(dataDir, "bootenv-sample"), filepath.Join(dataDir, first, "store"))
}

// writeDevLogin says how to log in as tms dev's first admin.
func writeDevLogin(w io.Writer, env *devenv.Env, dataDir string) {
	central := ""
	if env.CentralURL() != devCentral {
		central = " --central " + env.CentralURL()
	}
	file := filepath.Join(dataDir, "admin-password")
	if env.AdminCreated {
		fmt.Fprintf(w, "\n  first admin  user admin, password %s (kept in %s)\n", env.AdminPassword, file)
	} else {
		fmt.Fprintf(w, "\n  admin        user admin, first password in %s\n", file)
	}
	fmt.Fprintf(w, "\nLog in before the other commands (the login lasts 12h):\n  bin/tms login admin%s --password-stdin < %s\n", central, file)
}
