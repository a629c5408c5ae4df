package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/bootenv"
	"tms/manifest"
	"tms/workflows"
)

// Versions of the in-memory OS travel like images: published into a region's store, signed by
// central, shared region to region, rolled out behind a canary (docs/boot.md).

func (a *App) bootenvPublish() *cobra.Command {
	var p publishFlags
	c := &cobra.Command{
		Use:   "publish DIR --region REGION --store STORE [--name NAME] [--agent-version V] [--force] [--json]",
		Short: "Publish DIR/vmlinuz and DIR/initrd as a signed version of the in-memory OS",
		Long: `publish stores DIR/vmlinuz and DIR/initrd (tms bootenv build's output) in the store of region
REGION's server (--store: its store directory, or s3://…) as one new version of the image
bootenv.NAME (default name "default"), then has central register and sign it. The version is
then distributed like any image; tms bootenv rollout makes it the regions' in-memory OS.

A kernel that is not a bzImage, or an initrd whose /init is not a static executable, is
refused; --force publishes it anyway (a rollout's canary then stops it).`,
		Args: exactArgs(1, "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.publishBootEnv(cmd, args[0], p)
		},
	}
	p.flags(c)
	c.Flags().StringVar(&p.agentVersion, "agent-version", "", "the release of the agent in the initrd (default: this tms's)")
	c.Flags().BoolVar(&p.force, "force", false, "publish a kernel or initrd that would not boot (for a rollout's canary to stop)")
	c.Flags().BoolVar(&p.asJSON, "json", false, "print JSON")
	return c
}

// flags adds --region, --store and --name.
func (p *publishFlags) flags(c *cobra.Command) {
	regionFlag(c, &p.region)
	storeFlag(c, &p.loc)
	c.Flags().StringVar(&p.name, "name", bootenv.DefaultName, "the bootenv's name: its versions are the image bootenv.NAME")
}

// publishFlags are tms bootenv publish's flags (and build --publish's).
type publishFlags struct {
	loc, region, name, agentVersion string
	force, asJSON                   bool
}

// publishBootEnv publishes dir's vmlinuz and initrd into region's store and has central sign
// them (tms bootenv publish).
func (a *App) publishBootEnv(cmd *cobra.Command, dir string, p publishFlags) error {
	if err := requireFlag(cmd, "region", p.region); err != nil {
		return err
	}
	if err := requireFlag(cmd, "store", p.loc); err != nil {
		return err
	}
	if p.agentVersion == "" {
		p.agentVersion = Version
	}
	ctx := cmd.Context()
	c, err := a.dialRegion(ctx, p.region)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := a.openStore(ctx, cmd, p.loc, false)
	if err != nil {
		return err
	}
	res, err := bootenv.Publish(ctx, st, dir, bootenv.PublishOptions{Name: p.name, AgentVersion: p.agentVersion, Force: p.force})
	if err != nil {
		return err
	}
	for _, pr := range res.Problems {
		fmt.Fprintf(a.Stderr, "tms: warning: published anyway (--force): %s\n", pr)
	}
	v := res.Version
	info := activities.VersionInfo{Version: v.ID.String(), Name: res.Image, Parent: v.Manifest.Parent.String(), Created: v.Manifest.Meta.Created,
		DiskSize: v.Manifest.DiskSize, ChunkSize: v.Manifest.ChunkSize, StoredBytes: res.Import.Stats.StoredBytes}
	if v.Manifest.Parent.IsZero() {
		info.Parent = ""
	}
	in := activities.RegisterBootEnvInput{Info: info, Region: p.region, KernelVersion: res.Info.KernelVersion, AgentVersion: res.Info.AgentVersion, By: c.user}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "bootenv-publish/" + v.ID.String() + "/" + p.region, TaskQueue: activities.CentralQueue},
		workflows.PublishBootEnv, in)
	if err != nil {
		return fmt.Errorf("cannot have central register bootenv %s: %w", v.ID.Short(), err)
	}
	var signed activities.RegisterVersionResult
	if err := run.Get(ctx, &signed); err != nil {
		return fmt.Errorf("central did not register bootenv %s: %w", v.ID.Short(), err)
	}
	out := bootEnvRow{Version: v.ID.String(), Name: res.Info.Name, Kernel: res.Info.KernelVersion, Agent: res.Info.AgentVersion,
		Published: v.Manifest.Meta.Created, Regions: []string{p.region}, Running: []string{}}
	if p.asJSON {
		return a.printJSON(out)
	}
	again := ""
	if res.Unchanged {
		again = " (unchanged: already published)"
	}
	fmt.Fprintf(a.Stdout, "published bootenv %s as %s%s: kernel %s, agent %s, in region %s, signed by central key %s\nroll it out with: tms bootenv rollout %s\n",
		out.Name, v.ID.Short(), again, dash(out.Kernel), dash(out.Agent), p.region, signed.Signature.KeyID, v.ID.Short())
	return nil
}

// bootEnvRow is one version as tms bootenv ls prints it.
type bootEnvRow struct {
	Version   string    `json:"version"`
	Name      string    `json:"name"`
	Kernel    string    `json:"kernel_version"`
	Agent     string    `json:"agent_version"`
	Published time.Time `json:"published"`
	By        string    `json:"published_by,omitempty"`
	Regions   []string  `json:"regions"` // holding a verified copy
	Running   []string  `json:"running"` // whose current in-memory OS it is
}

func (a *App) bootenvLs() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List the published versions of the in-memory OS, where they are and which regions run them",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.centralAdmin(ctx, "bootenvs")
			if err != nil {
				return err
			}
			rows := []bootEnvRow{}
			for _, b := range res.BootEnvs {
				rows = append(rows, bootEnvRow{Version: b.Version, Name: b.Name, Kernel: b.KernelVersion, Agent: b.AgentVersion, Published: b.Published,
					By: b.PublishedBy, Regions: orEmpty(b.Regions), Running: orEmpty(b.Running)})
			}
			if asJSON {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tNAME\tKERNEL\tAGENT\tPUBLISHED\tIN REGIONS\tRUNS IN")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(r.Version), r.Name, dash(r.Kernel), dash(r.Agent),
					r.Published.Local().Format(time.DateTime), dash(strings.Join(r.Regions, ",")), dash(strings.Join(r.Running, ",")))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (a *App) bootenvRollout() *cobra.Command {
	var regions string
	var canaries []string
	var timeout time.Duration
	var wait, asJSON bool
	c := &cobra.Command{
		Use:   "rollout VERSION [--regions R1,R2] [--canary [REGION=]TERMINAL]... [--canary-timeout 10m] [--wait] [--json]",
		Short: "Make a published version of the in-memory OS the regions' own, one region at a time behind a canary",
		Long: `rollout goes through the regions one at a time, in the order --regions gives (default: every
region, sorted): it shares VERSION to the region, has the region's server materialize it
(only a version central signed, every chunk checked), boots one canary terminal into it (the
terminal's agent says which version it booted, then the terminal boots its own disk again)
and, when the canary came back with VERSION, makes it the region's in-memory OS.

A canary that does not come back within --canary-timeout (default 10m), or comes back with
another version, stops the rollout: it fails naming the region, the terminal and what
happened, that region keeps its previous version and the regions after it are not touched.

The canary of a region is the terminal --canary REGION=TERMINAL names, else the first bare
--canary TERMINAL the region has, else an enrolled terminal of the region with no task under
way, the one seen most recently. The rollout is the task bootenv-rollout/VERSION.`,
		Args: exactArgs(1, "VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := workflows.BootEnvRolloutInput{Canaries: canaries, CanaryTimeout: timeout}
			if regions != "" {
				for _, r := range strings.Split(regions, ",") {
					if r = strings.TrimSpace(r); r == "" || slices.Contains(in.Regions, r) {
						return usageError{fmt.Errorf("--regions %q: want distinct region ids separated by commas", regions)}
					}
					in.Regions = append(in.Regions, strings.TrimSpace(r))
				}
			}
			if timeout < 0 {
				return usageError{fmt.Errorf("--canary-timeout must be positive")}
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			for _, r := range in.Regions {
				if err := c.checkRegion(ctx, r); err != nil {
					return err
				}
			}
			res, err := c.centralAdmin(ctx, "bootenvs")
			if err != nil {
				return err
			}
			var found []string
			for _, b := range res.BootEnvs {
				if strings.HasPrefix(b.Version, args[0]) && len(args[0]) >= manifest.MinVersionPrefix {
					found = append(found, b.Version)
				}
			}
			if len(found) != 1 {
				return fmt.Errorf("bootenv version %q names %d published versions (tms bootenv ls lists them; give at least %d hex digits)", args[0], len(found), manifest.MinVersionPrefix)
			}
			in.Version, in.By = found[0], c.user
			id := workflows.BootEnvRolloutWorkflowID(in.Version)
			_, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: activities.CentralQueue, WorkflowExecutionErrorWhenAlreadyStarted: true},
				workflows.BootEnvRollout, in)
			if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
				return fmt.Errorf("a rollout of bootenv %s is already running as task %s: follow it with 'tms task show %s', or cancel it with 'tms task cancel %s'", shortID(in.Version), id, id, id)
			}
			if err != nil {
				return fmt.Errorf("cannot start the rollout of bootenv %s: %w", shortID(in.Version), err)
			}
			if !wait {
				if asJSON {
					return a.printJSON(taskJSON{Task: id, UI: c.uiURL(id)})
				}
				fmt.Fprintf(a.Stdout, "started the rollout of bootenv %s: task %s\nfollow it with: tms task show %s (or tms status)\n", shortID(in.Version), id, id)
				return nil
			}
			fmt.Fprintf(a.Stderr, "started the rollout of bootenv %s: task %s\n", shortID(in.Version), id)
			return a.followAs(ctx, c, id, asJSON)
		},
	}
	f := c.Flags()
	f.StringVar(&regions, "regions", "", "regions to roll out to, in this order, comma-separated (default: all, sorted)")
	f.StringArrayVar(&canaries, "canary", nil, "the canary: REGION=TERMINAL, or TERMINAL for the region that has it (repeatable)")
	f.DurationVar(&timeout, "canary-timeout", workflows.DefaultCanaryTimeout, "how long to wait for a canary to come back")
	f.BoolVar(&wait, "wait", false, "follow the rollout until it ends")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *App) bootenvSample() *cobra.Command {
	var out, kernel, broken string
	c := &cobra.Command{
		Use:   "sample --out DIR [--kernel-version V] [--broken kernel|initrd]",
		Short: "Write a small well-formed bootenv for tms dev's simulated terminals (it boots no real PC)",
		Long: `sample writes DIR/vmlinuz (a bzImage setup header naming --kernel-version, no kernel) and
DIR/initrd (a gzip'd cpio whose /init is a tiny static program): what tms dev's simulated
terminals check before they "boot". --broken kernel writes a vmlinuz that is not a bzImage,
--broken initrd an initrd whose /init is a shell script: a rollout's canary stops either (publish
them with --force). tms bootenv build makes the real in-memory OS.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag(cmd, "out", out); err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := bootenv.WriteSample(out, kernel); err != nil {
				return err
			}
			switch broken {
			case "":
			case "kernel":
				return os.WriteFile(filepath.Join(out, bootenv.KernelFile), []byte("not a kernel\n"), 0o644)
			case "initrd":
				b, err := bootenv.NewInitrd([]byte("#!/bin/sh\nexec /bin/agent\n"), nil)
				if err != nil {
					return err
				}
				return os.WriteFile(filepath.Join(out, bootenv.InitrdFile), b, 0o644)
			default:
				return usageError{fmt.Errorf("--broken %q: want kernel or initrd", broken)}
			}
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "directory that gets vmlinuz and initrd (required)")
	c.Flags().StringVar(&kernel, "kernel-version", "6.12.0-sample", "the kernel version its header names")
	c.Flags().StringVar(&broken, "broken", "", "write a broken one: kernel or initrd")
	return c
}
