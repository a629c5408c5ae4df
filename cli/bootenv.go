package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tms/bootenv"
	"tms/signing"
)

func (a *App) bootenvCommand() *cobra.Command {
	c := &cobra.Command{Use: "bootenv", Short: "Build, publish and roll out the in-memory OS that terminals network boot into"}
	c.AddCommand(a.bootenvBuild(), a.bootenvPublish(), a.bootenvLs(), a.bootenvRollout(), a.bootenvSample())
	return c
}

func (a *App) bootenvBuild() *cobra.Command {
	var o bootenv.Options
	var asJSON, publish bool
	var centralKey string
	var pub publishFlags
	c := &cobra.Command{
		Use:   "build --out DIR --central-key KEY [--ca FILE] [--kernel PATH] [--modules-dir DIR] [--agent PATH] [--publish --region R --store STORE [--name N]]",
		Short: "Write the kernel and initrd of the in-memory OS",
		Long: `build writes DIR/vmlinuz (a copy of Debian's kernel, the newest /boot/vmlinuz-* unless --kernel
says otherwise) and DIR/initrd: a gzip'd cpio archive whose /init is the static tms agent, with
the kernel modules of common NICs and disk controllers and their dependencies (decompressed)
and /etc/tms-modules listing them in load order. The same inputs give the same bytes.

--central-key (central's public key, tms-ed25519:… as tms central pubkey prints it, or a file
holding it) goes to /etc/tms/central.pub: the agent deploys only versions central signed, and
refuses every deploy without it (the build then warns). --ca FILE (PEM certificates) goes to
/etc/tms/ca.pem: the CA the agent trusts for HTTPS to its region (tms.region=https://…).

The agent is built from the source tree (CGO_ENABLED=0 go build ./cmd/tms-agent, so run this
in it) unless --agent names a built one.

--publish then publishes DIR as tms bootenv publish DIR --region R --store STORE [--name N]
does: a new version of the in-memory OS, signed by central, ready for tms bootenv rollout.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Out == "" {
				return usageError{fmt.Errorf("--out is required: the directory that gets vmlinuz and initrd")}
			}
			if publish && asJSON {
				return usageError{fmt.Errorf("--publish prints no JSON: run tms bootenv publish --json after the build")}
			}
			if publish {
				if err := requireFlag(cmd, "region", pub.region); err != nil {
					return err
				}
				if err := requireFlag(cmd, "store", pub.loc); err != nil {
					return err
				}
			}
			if centralKey != "" {
				k, err := signing.LoadPublicKey(centralKey)
				if err != nil {
					return usageError{fmt.Errorf("--central-key: %w", err)}
				}
				o.CentralKey = k
			}
			o.Log = a.log
			o.AgentVersion = Version
			start := time.Now()
			res, err := bootenv.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			if res.CentralKeyID == "" {
				fmt.Fprintln(a.Stderr, "tms: warning: built without --central-key: the agent of this boot environment will refuse every deploy")
			}
			if asJSON {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.Stdout, "%s\t%s\tkernel %s\n", res.Kernel, humanBytes(res.KernelSize), res.KernelVersion)
			fmt.Fprintf(a.Stdout, "%s\t%s\tagent %s, %d modules\n", res.Initrd, humanBytes(res.InitrdSize), humanBytes(res.AgentSize), len(res.Modules))
			if len(res.Missing) > 0 {
				fmt.Fprintf(a.Stdout, "this kernel has no module %s\n", strings.Join(res.Missing, ", "))
			}
			if res.CentralKeyID != "" {
				fmt.Fprintf(a.Stdout, "central key %s", res.CentralKeyID)
			} else {
				fmt.Fprintf(a.Stdout, "no central key")
			}
			if res.CACerts > 0 {
				fmt.Fprintf(a.Stdout, ", %d CA certificates for HTTPS to the region\n", res.CACerts)
			} else {
				fmt.Fprintln(a.Stdout, ", no CA (plain HTTP to the region)")
			}
			fmt.Fprintf(a.Stdout, "built in %s\n", time.Since(start).Round(time.Millisecond))
			if publish {
				pub.agentVersion = Version
				return a.publishBootEnv(cmd, o.Out, pub)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.Out, "out", "", "directory that gets vmlinuz and initrd")
	f.StringVar(&o.Kernel, "kernel", "", "kernel image (default: the newest /boot/vmlinuz-*)")
	f.StringVar(&o.ModulesDir, "modules-dir", "", "the kernel's modules (default: /lib/modules/VERSION)")
	f.StringVar(&o.Agent, "agent", "", "a static tms-agent binary (default: build it from the source tree)")
	f.StringVar(&centralKey, "central-key", "", "central's public key, tms-ed25519:… or a file holding it (tms central pubkey)")
	f.StringVar(&o.CAFile, "ca", "", "PEM file of the CA certificates the agent trusts for HTTPS to its region")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&publish, "publish", false, "then publish DIR as a version of the in-memory OS (needs --region and --store)")
	pub.flags(c)
	return c
}
