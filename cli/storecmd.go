package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func (a *App) storeCommand() *cobra.Command {
	c := &cobra.Command{Use: "store", Short: "Check and clean an image store"}
	c.AddCommand(a.storeGC(), a.storeVerify())
	return c
}

func (a *App) storeGC() *cobra.Command {
	var loc string
	c := &cobra.Command{
		Use:   "gc --store STORE",
		Short: "Delete chunks that no version references",
		Long: `gc deletes every chunk that no version in the store references. It takes the store for itself
while it runs and refuses to start while an import holds it, so it never deletes a chunk an
import is about to reference. A manifest it cannot read stops it before it deletes anything.`,
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
			fmt.Fprintf(a.Stdout, "gc: freed %d chunks (%s), kept %d chunks (%s) of %d versions, removed %d stale temporary files, in %s\n",
				res.FreedChunks, humanBytes(res.FreedBytes), res.KeptChunks, humanBytes(res.KeptBytes), res.Versions,
				res.StaleTemps, time.Since(start).Round(time.Millisecond))
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
