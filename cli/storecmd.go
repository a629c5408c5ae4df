package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"tms/store"

	"github.com/spf13/cobra"
)

func (a *App) storeCommand() *cobra.Command {
	c := &cobra.Command{Use: "store", Short: "Check and clean an image store"}
	c.AddCommand(a.storeGC(), a.storeVerify(), a.storeHolds())
	return c
}

func (a *App) storeGC() *cobra.Command {
	var loc string
	c := &cobra.Command{
		Use:   "gc --store STORE",
		Short: "Delete chunks that no version references",
		Long: `gc deletes every chunk that no version in the store references. It takes the store for itself
while it runs and refuses to start while an import holds it, so it never deletes a chunk an
import is about to reference. A manifest it cannot read stops it before it deletes anything.
Versions in use by a task ('tms store holds') keep their chunks, tagged or not; a hold on a
version whose manifest is gone stops gc before it deletes anything. Holds that lapsed more
than a day ago are removed.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := a.openStore(ctx, cmd, loc, false)
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := s.GC(ctx)
			if err != nil {
				return err
			}
			packs := ""
			if res.RemovedPacks+res.RewrittenPacks > 0 {
				packs = fmt.Sprintf(" (%d packs removed, %d rewritten)", res.RemovedPacks, res.RewrittenPacks)
			}
			fmt.Fprintf(a.Stdout, "gc: freed %d chunks (%s)%s, kept %d chunks (%s) of %d versions (%d holds in force), removed %d stale temporary files and %d lapsed holds, in %s\n",
				res.FreedChunks, humanBytes(res.FreedBytes), packs, res.KeptChunks, humanBytes(res.KeptBytes), res.Versions, res.Held,
				res.StaleTemps, res.ExpiredHolds, time.Since(start).Round(time.Millisecond))
			for _, p := range res.DamagedPacks {
				fmt.Fprintf(a.Stderr, "tms: warning: pack %s is damaged: its chunks are not served and gc left it alone; run tms store verify\n", p)
			}
			return nil
		},
	}
	storeFlag(c, &loc)
	return c
}

func (a *App) storeVerify() *cobra.Command {
	var loc string
	var jobs int
	c := &cobra.Command{
		Use:   "verify --store STORE",
		Short: "Read and check every manifest, tag and chunk",
		Long: `verify reads every manifest, tag and chunk in the store and checks each against its hash. It
names every missing or corrupt object and the image versions that need it, and exits with
status 1 if it found any.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := a.openStore(ctx, cmd, loc, false)
			if err != nil {
				return err
			}
			start := time.Now()
			bar := newProgressBar(a.Stderr, a.progressOn(), "verify")
			rep, err := s.Verify(ctx, jobs, func(n int64) { bar.Update(n, 0) })
			bar.Done()
			if err != nil {
				return err
			}
			for _, p := range rep.Problems {
				fmt.Fprintln(a.Stdout, p.String())
			}
			summary := fmt.Sprintf("verify: %d versions, %d tags, %d chunks (%s) checked in %s",
				rep.Versions, rep.Tags, rep.Chunks, humanBytes(rep.Bytes), time.Since(start).Round(time.Millisecond))
			if len(rep.Problems) > 0 {
				return fmt.Errorf("%s: %d problem(s) found", summary, len(rep.Problems))
			}
			fmt.Fprintln(a.Stdout, summary+": all good")
			return nil
		},
	}
	storeFlag(c, &loc)
	c.Flags().IntVar(&jobs, "jobs", 8, "chunks read at once")
	return c
}

// holdRow is one hold as 'tms store holds --json' and 'tms image show --json' print it.
type holdRow struct {
	Version string    `json:"version"`
	Holder  string    `json:"holder"`
	Until   time.Time `json:"until,omitzero"` // zero for a pin, which does not lapse
	Host    string    `json:"host,omitempty"`
	Live    bool      `json:"live"`
	// Pinned marks a pin (holder "pin"), By who pinned it and Since when.
	Pinned bool      `json:"pinned,omitempty"`
	By     string    `json:"by,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// untilText says until when a hold stands: its expiry, or that a pin stands until unpinned.
func (r holdRow) untilText() string {
	if r.Pinned {
		t := "unpinned"
		if r.By != "" {
			t += " (pinned by " + r.By + ")"
		}
		return t
	}
	return r.Until.Local().Format(time.DateTime)
}

func holdRows(holds []store.Hold, now time.Time) []holdRow {
	rows := []holdRow{}
	for _, h := range holds {
		row := holdRow{Version: h.Version.String(), Holder: h.Holder, Until: h.Until, Host: h.Host, Live: h.Live(now)}
		if h.Pinned {
			row.Pinned, row.By, row.Since = true, h.By, h.Renewed
		}
		rows = append(rows, row)
	}
	return rows
}

func (a *App) storeHolds() *cobra.Command {
	var loc string
	var asJSON, all bool
	c := &cobra.Command{
		Use:   "holds --store STORE [--all] [--json]",
		Short: "List the versions tasks are using, which rm and gc keep",
		Long: `holds lists the holds in the store: which task (a deploy, a region pulling a version, a
schedule) uses which version, and until when. 'tms image rm' refuses to remove a held version
and 'tms store gc' keeps its chunks. A task renews its hold while it runs and releases it when
it ends; the hold of a task that crashed lapses at its expiry. --all lists lapsed holds too.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := a.openStore(ctx, cmd, loc, false)
			if err != nil {
				return err
			}
			holds, err := s.AllHolds(ctx)
			if err != nil {
				return err
			}
			now := time.Now()
			rows := []holdRow{}
			for _, r := range holdRows(holds, now) {
				if all || r.Live {
					rows = append(rows, r)
				}
			}
			if asJSON {
				return a.printJSON(rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(a.Stdout, "no version is in use")
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tHOLDER\tUNTIL\tHOST")
			for _, r := range rows {
				until := r.untilText()
				if !r.Live {
					until += " (lapsed)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Version[:12], r.Holder, until, r.Host)
			}
			return tw.Flush()
		},
	}
	storeFlag(c, &loc)
	c.Flags().BoolVar(&all, "all", false, "list lapsed holds too")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
