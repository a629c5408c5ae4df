package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tms/activities"
	"tms/agentwire"
	"tms/workflows"
)

// The inventory commands reach a region through Temporal: a RegionAdmin workflow on the
// region's task queue, answered by the region's own worker.

// regionRow is one line of `tms region ls`.
type regionRow struct {
	ID       string            `json:"id"`
	Endpoint string            `json:"endpoint"`
	Labels   map[string]string `json:"labels"`
	Capacity int64             `json:"capacity"`
	Used     int64             `json:"used"`
	// HighWater is the store's high-water mark and Images how many versions it holds, from
	// the region's last report.
	HighWater float64   `json:"high_water,omitempty"`
	Images    int       `json:"images"`
	LastSeen  time.Time `json:"last_seen"`
	Timezone  string    `json:"timezone"` // schedules for the region are written in it
	// Servers are the region's servers (a region may run several), as it last reported them.
	Servers []serverRow `json:"servers"`
}

func (a *App) regionAdminCommand() *cobra.Command {
	c := &cobra.Command{Use: "region", Short: "List the regions (classroom servers) central knows"}
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List the regions in central's catalog: id, data endpoint, labels",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.centralAdmin(ctx, "regions")
			if err != nil {
				return err
			}
			rows := []regionRow{}
			for _, r := range res.Regions {
				row := regionRow{ID: r.ID, Endpoint: r.Endpoint, Labels: r.Labels, Capacity: r.Capacity, Used: r.Used, LastSeen: r.LastSeen, Timezone: r.Timezone,
					HighWater: r.HighWater, Images: r.Images, Servers: serverRows(r.Servers, true)}
				if row.Labels == nil {
					row.Labels = map[string]string{}
				}
				rows = append(rows, row)
			}
			slices.SortFunc(rows, func(x, y regionRow) int { return strings.Compare(x.ID, y.ID) })
			if asJSON {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REGION\tENDPOINT\tTIMEZONE\tSTORE USED / CAPACITY\tHIGH WATER\tIMAGES\tLABELS")
			for _, r := range rows {
				hw := "-"
				if r.HighWater > 0 {
					hw = fmt.Sprintf("%.0f%%", 100*r.HighWater)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.ID, dash(r.Endpoint), dash(r.Timezone), storeText(r.Used, r.Capacity, r.HighWater),
					hw, r.Images, dash(labels(r.Labels)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			servers := map[string][]serverRow{}
			for _, r := range rows {
				servers[r.ID] = r.Servers
			}
			return writeServers(a.Stdout, servers, a.now())
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(ls)
	return c
}

func labels(m map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		kv = append(kv, k+"="+m[k])
	}
	return strings.Join(kv, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// terminalRow is one line of `tms terminal ls`.
type terminalRow struct {
	Name     string `json:"name"`
	MAC      string `json:"mac"`
	Enrolled bool   `json:"enrolled"`
	DiskSize int64  `json:"disk_size"`
	Version  string `json:"version"`
	// VersionNote says why the version is unknown (a task writing the disk, a disk check).
	VersionNote string           `json:"version_note,omitempty"`
	LastIP      string           `json:"last_ip"`
	LastSeen    time.Time        `json:"last_seen"`
	BootAction  agentwire.Action `json:"boot_action"`
	Task        string           `json:"task,omitempty"` // the workflow id, as tms task show takes it
	Run         string           `json:"run,omitempty"`  // the run of that workflow the terminal's task belongs to
}

func (a *App) terminalCommand() *cobra.Command {
	c := &cobra.Command{Use: "terminal", Short: "List, enroll, rename, move and remove a region's terminals"}
	c.AddCommand(a.terminalLs(), a.terminalEnroll(), a.terminalEnrollToken())
	c.AddCommand(a.terminalRm(), a.terminalRename(), a.terminalMove(), a.terminalImport())
	return c
}

func (a *App) terminalLs() *cobra.Command {
	var region string
	var asJSON, seen bool
	c := &cobra.Command{
		Use:   "ls --region REGION [--seen] [--json]",
		Short: "List a region's terminals: name, MAC, disk, version on disk, last seen, next boot",
		Long: `List a region's terminals: name, MAC, disk, version on disk, last seen, next boot.
With --seen, list only the terminals seen on the network (a DHCP request, an agent's call) that
are not enrolled, first seen first: MAC, last IP, first and last seen.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if seen {
				return a.seenLs(cmd, region, asJSON)
			}
			res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpTerminals})
			if err != nil {
				return err
			}
			rows := []terminalRow{}
			for _, t := range res.Terminals {
				task, run := workflows.SplitTaskID(t.Task)
				rows = append(rows, terminalRow{Name: t.Name, MAC: t.MAC, Enrolled: t.Enrolled, DiskSize: t.DiskSize, Version: t.Version,
					VersionNote: t.VersionNote, LastIP: t.LastIP, LastSeen: t.LastSeen, BootAction: t.BootAction, Task: task, Run: run})
			}
			if asJSON {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tMAC\tDISK\tVERSION\tLAST IP\tLAST SEEN\tNEXT BOOT")
			for _, r := range rows {
				name := r.Name
				if !r.Enrolled {
					name += " (not enrolled)"
				}
				disk, seen := "-", "never"
				if r.DiskSize > 0 {
					disk = humanBytes(r.DiskSize)
				}
				if !r.LastSeen.IsZero() {
					seen = r.LastSeen.Local().Format(time.DateTime)
				}
				boot := string(r.BootAction)
				if r.Task != "" {
					boot += " (" + r.Task + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(name), r.MAC, disk, dash(short(r.Version)), dash(r.LastIP), seen, dash(boot))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// Why a version is unknown, where the region knows: the next update of such a
			// terminal is full.
			for _, r := range rows {
				if r.Version == "" && r.VersionNote != "" {
					fmt.Fprintf(a.Stdout, "%s: version unknown: %s\n", dash(r.Name), r.VersionNote)
				}
			}
			return nil
		},
	}
	regionFlag(c, &region)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&seen, "seen", false, "list the terminals seen on the network but not enrolled")
	return c
}

// short is the first 12 digits of a version id, as listings show it.
func short(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}

func (a *App) terminalEnroll() *cobra.Command {
	var region, group, pattern string
	var seen bool
	var limit int
	c := &cobra.Command{
		Use:   "enroll --region REGION (MAC NAME | --seen --group GROUP [--name PATTERN] [--limit N])",
		Short: "Enroll the terminal with network card MAC under NAME, or every terminal seen, so they can be captured and deployed",
		Long: `Enroll the terminal with network card MAC under NAME, so it can be captured and deployed.

With --seen, enroll every terminal seen on the network but not enrolled (tms terminal ls
--seen), in the order they were first seen, into GROUP (created if it does not exist), named
from PATTERN: a name with {n} where the number goes, {n:02} for two digits (r3-pc{n:02} makes
r3-pc01, r3-pc02, ...). Numbers go on after the highest number a terminal name of the pattern
has. The default pattern is GROUP-{n}. Switch the PCs of a room on seat by seat and their
numbers follow the seats. --limit enrolls only the first N.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if seen {
				return exactArgs(0, "no MAC or NAME with --seen")(cmd, args)
			}
			return exactArgs(2, "MAC and NAME (or --seen)")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if seen {
				return a.enrollSeen(cmd, region, group, pattern, limit)
			}
			if group != "" || pattern != "" || limit != 0 {
				return usageError{fmt.Errorf("%s: --group, --name and --limit go with --seen", cmd.CommandPath())}
			}
			if _, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpEnroll, MAC: args[0], Name: args[1]}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "enrolled %s as %s in region %s\n", args[0], args[1], region)
			return nil
		},
	}
	regionFlag(c, &region)
	c.Flags().BoolVar(&seen, "seen", false, "enroll every terminal seen on the network but not enrolled")
	c.Flags().StringVar(&group, "group", "", "with --seen: the group to enroll them into (created if missing)")
	c.Flags().StringVar(&pattern, "name", "", "with --seen: the name pattern, like r3-pc{n} or r3-pc{n:02} (default GROUP-{n})")
	c.Flags().IntVar(&limit, "limit", 0, "with --seen: enroll at most N terminals, the first seen (0: all)")
	return c
}

// groupRow is one line of `tms group ls`.
type groupRow struct {
	Name    string            `json:"name"`
	Members []string          `json:"members"`
	Labels  map[string]string `json:"labels"`
}

func (a *App) groupCommand() *cobra.Command {
	c := &cobra.Command{Use: "group", Short: "Create, fill, empty, remove and list a region's groups of terminals (a classroom, a row)"}
	c.AddCommand(a.groupCreate(), a.groupAdd(), a.groupLs())
	c.AddCommand(a.groupRm(), a.groupRemove(), a.groupLabel())
	return c
}

// groupLabel sets, removes or clears a group's location labels.
func (a *App) groupLabel() *cobra.Command {
	var region string
	var clear, asJSON bool
	c := &cobra.Command{
		Use:   "label --region REGION GROUP [KEY=VALUE | KEY-]... [--clear] [--json]",
		Short: "Set or remove a group's location labels (room=a): its terminals boot from the servers labelled alike",
		Long: `Set or remove a group's location labels. KEY=VALUE sets a label, KEY- removes one, --clear
removes them all first. Label names are lowercase letters, digits, '.', '_' and '-'; values letters,
digits, '.', '_' and '-' (at most 63 each, at most 16 labels).

A region with several servers (region.server_labels) boots each terminal from a healthy server
whose labels include all of its groups' labels; if none does, from any healthy server
(docs/boot.md, "Who answers a terminal").`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || (len(args) == 1 && !clear) {
				return usageError{fmt.Errorf("%s takes GROUP and at least one KEY=VALUE or KEY- (or --clear)", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			in := activities.AdminInput{Op: activities.OpGroupLabel, Group: args[0], Clear: clear, Labels: map[string]string{}}
			for _, arg := range args[1:] {
				if k, v, ok := strings.Cut(arg, "="); ok {
					in.Labels[k] = v
				} else if k, ok := strings.CutSuffix(arg, "-"); ok && k != "" {
					in.LabelsRemove = append(in.LabelsRemove, k)
				} else {
					return usageError{fmt.Errorf("%q is neither KEY=VALUE nor KEY-", arg)}
				}
			}
			res, err := a.regionAdmin(cmd, region, in)
			if err != nil {
				return err
			}
			lbl := map[string]string{}
			if len(res.Groups) == 1 && res.Groups[0].Labels != nil {
				lbl = res.Groups[0].Labels
			}
			if asJSON {
				return a.printJSON(groupRow{Name: args[0], Members: []string{}, Labels: lbl})
			}
			fmt.Fprintf(a.Stdout, "group %s in region %s: labels %s\n", args[0], region, dash(labels(lbl)))
			return nil
		},
	}
	regionFlag(c, &region)
	c.Flags().BoolVar(&clear, "clear", false, "remove every label first")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *App) groupCreate() *cobra.Command {
	var region string
	c := &cobra.Command{
		Use:   "create --region REGION NAME",
		Short: "Create an empty group",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpGroupCreate, Group: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "created group %s in region %s\n", args[0], region)
			return nil
		},
	}
	regionFlag(c, &region)
	return c
}

func (a *App) groupAdd() *cobra.Command {
	var region string
	c := &cobra.Command{
		Use:   "add --region REGION GROUP TERMINAL...",
		Short: "Add terminals (names or MACs) to a group",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageError{fmt.Errorf("%s takes GROUP and at least one TERMINAL, got %d argument(s)", cmd.CommandPath(), len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpGroupAdd, Group: args[0], Terminals: args[1:]}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "added %s to group %s in region %s\n", strings.Join(args[1:], ", "), args[0], region)
			return nil
		},
	}
	regionFlag(c, &region)
	return c
}

func (a *App) groupLs() *cobra.Command {
	var region string
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls --region REGION [--json]",
		Short: "List a region's groups and their members",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpGroups})
			if err != nil {
				return err
			}
			rows := []groupRow{}
			for _, g := range res.Groups {
				m := g.Members
				if m == nil {
					m = []string{}
				}
				l := g.Labels
				if l == nil {
					l = map[string]string{}
				}
				rows = append(rows, groupRow{Name: g.Name, Members: m, Labels: l})
			}
			if asJSON {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tLABELS\tTERMINALS\tMEMBERS")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Name, dash(labels(r.Labels)), len(r.Members), dash(strings.Join(r.Members, ", ")))
			}
			return tw.Flush()
		},
	}
	regionFlag(c, &region)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// catalogRow is one line of `tms image ls` without --store: a version in central's catalog.
type catalogRow struct {
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Parent      string    `json:"parent,omitempty"`
	Tags        []string  `json:"tags"`
	Created     time.Time `json:"created"`
	DiskSize    int64     `json:"disk_size"`
	StoredBytes int64     `json:"stored_bytes"`
	Regions     []string  `json:"regions"`
	Pending     []string  `json:"pending"`
	// Signer is the key id of central's signature of the version; empty if it is not signed.
	Signer    string `json:"signer"`
	Signature []byte `json:"signature,omitempty"`
}

// signedBy is how listings show who signed a version.
func signedBy(keyID string) string {
	if keyID == "" {
		return "NOT SIGNED"
	}
	return keyID
}

// catalogImageLs lists central's catalog: every version, and the regions holding a verified copy.
func (a *App) catalogImageLs(cmd *cobra.Command, asJSON bool) error {
	ctx := cmd.Context()
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.centralAdmin(ctx, "images")
	if err != nil {
		return err
	}
	rows := []catalogRow{}
	for _, im := range res.Images {
		row := catalogRow{Name: im.Name, Version: im.Version, Parent: im.Parent, Tags: im.Tags, Created: im.Created,
			DiskSize: im.DiskSize, StoredBytes: im.StoredBytes, Regions: im.Regions, Pending: im.Pending,
			Signer: im.Signature.KeyID, Signature: im.Signature.Signature}
		for _, s := range []*[]string{&row.Tags, &row.Regions, &row.Pending} {
			if *s == nil {
				*s = []string{}
			}
			slices.Sort(*s)
		}
		rows = append(rows, row)
	}
	slices.SortStableFunc(rows, func(x, y catalogRow) int {
		if c := strings.Compare(x.Name, y.Name); c != 0 {
			return c
		}
		return y.Created.Compare(x.Created)
	})
	if asJSON {
		return a.printJSON(rows)
	}
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tTAGS\tCREATED\tDISK SIZE\tSTORED\tREGIONS\tSIGNED BY")
	for _, r := range rows {
		regions := strings.Join(r.Regions, ",")
		for _, p := range r.Pending {
			regions += " " + p + "(copying)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, short(r.Version), dash(strings.Join(r.Tags, ",")),
			r.Created.Local().Format(time.DateTime), humanBytes(r.DiskSize), humanBytes(r.StoredBytes), dash(strings.TrimSpace(regions)), signedBy(r.Signer))
	}
	return tw.Flush()
}

// regionAdmin runs one RegionAdmin operation for a command that takes --region.
func (a *App) regionAdmin(cmd *cobra.Command, region string, in activities.AdminInput) (activities.AdminResult, error) {
	if err := requireFlag(cmd, "region", region); err != nil {
		return activities.AdminResult{}, err
	}
	ctx := cmd.Context()
	c, err := a.dial(ctx)
	if err != nil {
		return activities.AdminResult{}, err
	}
	defer c.Close()
	return c.regionAdmin(ctx, region, in)
}
