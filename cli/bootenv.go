package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tms/bootenv"
)

func (a *App) bootenvCommand() *cobra.Command {
	c := &cobra.Command{Use: "bootenv", Short: "Build the in-memory OS that terminals network boot into"}
	c.AddCommand(a.bootenvBuild())
	return c
}

func (a *App) bootenvBuild() *cobra.Command {
	var o bootenv.Options
	var asJSON bool
	c := &cobra.Command{
		Use:   "build --out DIR [--kernel PATH] [--modules-dir DIR] [--agent PATH]",
		Short: "Write the kernel and initrd of the in-memory OS",
		Long: `build writes DIR/vmlinuz (a copy of Debian's kernel, the newest /boot/vmlinuz-* unless --kernel
says otherwise) and DIR/initrd: a gzip'd cpio archive whose /init is the static tms agent, with
the kernel modules of common NICs and disk controllers and their dependencies (decompressed)
and /etc/tms-modules listing them in load order. The same inputs give the same bytes.

The agent is built from the source tree (CGO_ENABLED=0 go build ./cmd/tms-agent, so run this
in it) unless --agent names a built one.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Out == "" {
				return usageError{fmt.Errorf("--out is required: the directory that gets vmlinuz and initrd")}
			}
			o.Log = a.log
			o.AgentVersion = Version
			start := time.Now()
			res, err := bootenv.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.Stdout, "%s\t%s\tkernel %s\n", res.Kernel, humanBytes(res.KernelSize), res.KernelVersion)
			fmt.Fprintf(a.Stdout, "%s\t%s\tagent %s, %d modules\n", res.Initrd, humanBytes(res.InitrdSize), humanBytes(res.AgentSize), len(res.Modules))
			if len(res.Missing) > 0 {
				fmt.Fprintf(a.Stdout, "this kernel has no module %s\n", strings.Join(res.Missing, ", "))
			}
			fmt.Fprintf(a.Stdout, "built in %s\n", time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.Out, "out", "", "directory that gets vmlinuz and initrd")
	f.StringVar(&o.Kernel, "kernel", "", "kernel image (default: the newest /boot/vmlinuz-*)")
	f.StringVar(&o.ModulesDir, "modules-dir", "", "the kernel's modules (default: /lib/modules/VERSION)")
	f.StringVar(&o.Agent, "agent", "", "a static tms-agent binary (default: build it from the source tree)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
