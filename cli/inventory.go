package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tms/activities"
	"tms/state"
)

// Keeping a lab's inventory: terminals seen on the network and enrolled in one go or from a
// roster file, renamed, moved between groups, removed; groups emptied and removed. Every
// command is a RegionAdmin operation (see admin.go).

func atLeast(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("%s takes %s, got %d argument(s)", cmd.CommandPath(), names, len(args))}
		}
		return nil
	}
}

// seenRow is one line of `tms terminal ls --seen`.
type seenRow struct {
	MAC       string    `json:"mac"`
	LastIP    string    `json:"last_ip"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format(time.DateTime)
}

// seenLs lists the terminals seen on the network but not enrolled, first seen first.
func (a *App) seenLs(cmd *cobra.Command, region string, asJSON bool) error {
	res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpSeen})
	if err != nil {
		return err
	}
	rows := []seenRow{}
	for _, s := range res.Seen {
		rows = append(rows, seenRow{MAC: s.MAC, LastIP: s.LastIP, FirstSeen: s.FirstSeen, LastSeen: s.LastSeen})
	}
	if asJSON {
		return a.printJSON(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(a.Stdout, "no terminal of region %s is waiting to be enrolled\n", region)
		return nil
	}
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tLAST IP\tFIRST SEEN\tLAST SEEN")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.MAC, dash(r.LastIP), when(r.FirstSeen), when(r.LastSeen))
	}
	return tw.Flush()
}

// enrollSeen enrolls every terminal seen but not enrolled into group, named from pattern.
func (a *App) enrollSeen(cmd *cobra.Command, region, group, pattern string, limit int) error {
	if err := requireFlag(cmd, "group", group); err != nil {
		return err
	}
	if limit < 0 {
		return usageError{fmt.Errorf("%s: --limit %d is negative", cmd.CommandPath(), limit)}
	}
	if pattern == "" {
		pattern = group + "-{n}"
	}
	res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpEnrollSeen, Group: group, Pattern: pattern, Limit: limit})
	if err != nil {
		return err
	}
	if len(res.Enrolled) == 0 {
		fmt.Fprintf(a.Stdout, "no terminal of region %s is waiting to be enrolled: switch the PCs on to boot from the network, then check with tms terminal ls --region %s --seen\n", region, region)
		return nil
	}
	created := ""
	if res.CreatedGroup {
		created = " (created)"
	}
	fmt.Fprintf(a.Stdout, "enrolled %d terminal(s) in region %s, in group %s%s:\n", len(res.Enrolled), region, group, created)
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMAC\tLAST IP")
	for _, t := range res.Enrolled {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.MAC, dash(t.LastIP))
	}
	return tw.Flush()
}

func (a *App) terminalRm() *cobra.Command {
	var region string
	c := &cobra.Command{
		Use:   "rm --region REGION TERMINAL...",
		Short: "Remove terminals (names or MACs): their records, agent keys and group memberships",
		Long: `Remove terminals (names or MACs) from the region's inventory: their records, agent keys,
group memberships and boot actions. A terminal with an unfinished task is refused (cancel the
task first), and then none is removed. Records of finished tasks stay. A removed terminal that
boots again shows up as seen, not enrolled (tms terminal ls --seen).`,
		Args: atLeast(1, "at least one TERMINAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpTerminalRm, Terminals: args})
			if err != nil {
				return err
			}
			for _, t := range res.Removed {
				name := t.Name
				if !t.Enrolled {
					name = "(not enrolled)"
				}
				fmt.Fprintf(a.Stdout, "removed %s %s from region %s\n", name, t.MAC, region)
			}
			return nil
		},
	}
	regionFlag(c, &region)
	return c
}

func (a *App) terminalRename() *cobra.Command {
	var region string
	c := &cobra.Command{
		Use:   "rename --region REGION TERMINAL NEWNAME",
		Short: "Give an enrolled terminal (name or MAC) a new name; its tasks go on",
		Args:  exactArgs(2, "TERMINAL and NEWNAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpRename, Terminals: args[:1], Name: args[1]}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "renamed %s to %s in region %s\n", args[0], args[1], region)
			return nil
		},
	}
	regionFlag(c, &region)
	return c
}

func (a *App) terminalMove() *cobra.Command {
	var region, group string
	c := &cobra.Command{
		Use:   "move --region REGION TERMINAL... --to GROUP",
		Short: "Move terminals (names or MACs) into GROUP, out of every other group",
		Long: `Move terminals (names or MACs) into GROUP and out of every other group they are in.
GROUP must exist (tms group create). To add a terminal to a group and keep its other groups,
use tms group add.`,
		Args: atLeast(1, "at least one TERMINAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "to", group); err != nil {
				return err
			}
			if _, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpMove, Group: group, Terminals: args}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "moved %s to group %s in region %s\n", strings.Join(args, ", "), group, region)
			return nil
		},
	}
	regionFlag(c, &region)
	c.Flags().StringVar(&group, "to", "", "the group to move them to (required)")
	return c
}

func (a *App) groupRm() *cobra.Command {
	var region string
	var force bool
	c := &cobra.Command{
		Use:   "rm --region REGION GROUP [--force]",
		Short: "Remove a group; its terminals stay enrolled",
		Long: `Remove a group. A group with terminals is refused unless --force is given; either way its
terminals stay enrolled (tms terminal rm removes terminals).`,
		Args: exactArgs(1, "GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpGroupRm, Group: args[0], Force: force})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "removed group %s from region %s (%d terminal(s) stay enrolled)\n", args[0], region, res.Members)
			return nil
		},
	}
	regionFlag(c, &region)
	c.Flags().BoolVar(&force, "force", false, "remove the group even if it has terminals")
	return c
}

func (a *App) groupRemove() *cobra.Command {
	var region string
	c := &cobra.Command{
		Use:   "remove --region REGION GROUP TERMINAL...",
		Short: "Take terminals (names or MACs) out of a group; they stay enrolled",
		Args:  atLeast(2, "GROUP and at least one TERMINAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpGroupTakeOut, Group: args[0], Terminals: args[1:]}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "took %s out of group %s in region %s\n", strings.Join(args[1:], ", "), args[0], region)
			return nil
		},
	}
	regionFlag(c, &region)
	return c
}

// importRow is one line of `tms terminal import`'s report.
type importRow struct {
	Line    int      `json:"line"`
	MAC     string   `json:"mac"`
	Name    string   `json:"name"`
	Group   string   `json:"group"`
	Outcome string   `json:"outcome"` // added, changed, unchanged or refused
	Changes []string `json:"changes,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

// importReport is `tms terminal import --json`.
type importReport struct {
	Applied       bool        `json:"applied"`
	DryRun        bool        `json:"dry_run"`
	CreatedGroups []string    `json:"created_groups"`
	Lines         []importRow `json:"lines"`
}

// errRefusedLines ends an import with refused lines: the report says which.
var errRefusedLines = errors.New("nothing was imported")

func (a *App) terminalImport() *cobra.Command {
	var region string
	var dryRun, asJSON bool
	c := &cobra.Command{
		Use:   "import --region REGION FILE.csv [--dry-run] [--json]",
		Short: "Enroll the terminals listed in a CSV file of MAC,name,group lines",
		Long: `Enroll the terminals listed in a CSV file, one a line: MAC,name,group. A first line starting
with "mac" is a header; lines starting with # are comments; the group may be empty or left out.
MACs may be written aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or aabbccddeeff.

Each line's MAC is enrolled under its name and, if the line names a group, added to that group
(created if missing; the terminal's other groups stay). The report gives each line's outcome:
added, changed (name, group), unchanged or refused (why).

An import is all or nothing: if any line is refused, nothing changes; fix the lines the report
names and run it again. --dry-run reports without changing anything. The file may have at most
4096 terminal lines and 256 KiB.`,
		Args: exactArgs(1, "FILE.csv"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "region", region); err != nil {
				return err
			}
			data, err := readBounded(args[0], state.MaxRosterBytes)
			if err != nil {
				return err
			}
			res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpImport, CSV: data, DryRun: dryRun})
			if err != nil {
				return err
			}
			rep := importReport{Applied: res.Import.Applied, DryRun: dryRun, CreatedGroups: res.Import.CreatedGroups, Lines: []importRow{}}
			if rep.CreatedGroups == nil {
				rep.CreatedGroups = []string{}
			}
			count := map[string]int{}
			for _, l := range res.Import.Lines {
				rep.Lines = append(rep.Lines, importRow{Line: l.Line, MAC: l.MAC, Name: l.Name, Group: l.Group, Outcome: l.Outcome, Changes: l.Changes, Reason: l.Reason})
				count[l.Outcome]++
			}
			if asJSON {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "LINE\tMAC\tNAME\tGROUP\tOUTCOME")
				for _, r := range rep.Lines {
					outcome := r.Outcome
					if len(r.Changes) > 0 {
						outcome += ": " + strings.Join(r.Changes, ", ")
					}
					if r.Reason != "" {
						outcome += ": " + r.Reason
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Line, dash(r.MAC), dash(r.Name), dash(r.Group), outcome)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				tally := fmt.Sprintf("%d added, %d changed, %d unchanged", count[state.ImportAdded], count[state.ImportChanged], count[state.ImportUnchanged])
				if len(rep.CreatedGroups) > 0 {
					tally += ", new group(s) " + strings.Join(rep.CreatedGroups, ", ")
				}
				switch {
				case count[state.ImportRefused] > 0:
				case dryRun:
					fmt.Fprintf(a.Stdout, "dry run, nothing changed; the import would make %s\n", tally)
				default:
					fmt.Fprintf(a.Stdout, "imported into region %s: %s\n", region, tally)
				}
			}
			if n := count[state.ImportRefused]; n > 0 {
				return fmt.Errorf("%w: %d of %d line(s) refused; fix them and run the import again", errRefusedLines, n, len(rep.Lines))
			}
			return nil
		},
	}
	regionFlag(c, &region)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "report what the import would do, change nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

// readBounded reads a file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is bigger than %d KiB, the most an import takes: split it", path, limit>>10)
	}
	return data, nil
}
