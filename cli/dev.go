package cli

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/manifest"
)

// devStoreDemo shows the image store at work: it makes a sample disk, imports it, changes it and
// imports it again, exports it and checks the copy.
func (a *App) devStoreDemo() *cobra.Command {
	var dataDir string
	var size int64
	c := &cobra.Command{
		Use:   "store-demo",
		Short: "Show the image store at work: import, update, export and verify a sample disk image",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return err
			}
			disk := filepath.Join(dataDir, "sample-disk.raw")
			storeDir := filepath.Join(dataDir, "store")
			out := filepath.Join(dataDir, "exported-disk.raw")
			say := func(f string, args ...any) { fmt.Fprintf(a.Stdout, "==> "+f+"\n", args...) }

			say("making a %s sample disk at %s (GPT, random, text-like and empty regions)", humanBytes(size), disk)
			if err := sampledisk.Write(disk, sampledisk.Options{Size: size, Seed: 1}); err != nil {
				return err
			}
			s, err := a.openStore(ctx, cmd, storeDir, true)
			if err != nil {
				return err
			}
			imp := func() (*imageio.ImportResult, error) {
				bar := newProgressBar(a.Stderr, a.progressOn(), "import")
				defer bar.Done()
				return imageio.Import(ctx, s, disk, imageio.ImportOptions{Name: "sample", Progress: bar.Update, Log: a.log})
			}
			say("importing it into the store at %s as sample:latest", storeDir)
			first, err := imp()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "    version %s: %d chunks, %d zero, stored %s of %s, in %s\n", first.Version.ID.Short(),
				first.Chunks, first.Zero, humanBytes(first.Stats.StoredBytes), humanBytes(first.DiskSize), first.Elapsed.Round(1e6))

			say("changing 1%% of its 4 KiB blocks, as an update would, and importing again")
			if _, err := sampledisk.Mutate(disk, 0.01, 2); err != nil {
				return err
			}
			second, err := imp()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "    version %s (parent %s): added only %s in %d chunks\n", second.Version.ID.Short(),
				second.Version.Manifest.Parent.Short(), humanBytes(second.Stats.AddedBytes), second.Stats.AddedChunks)

			say("exporting sample:latest to %s", out)
			os.Remove(out)
			ref, _ := manifest.ParseRef("sample")
			v, err := s.Resolve(ctx, ref)
			if err != nil {
				return err
			}
			bar := newProgressBar(a.Stderr, a.progressOn(), "export")
			ex, err := imageio.Export(ctx, s, v, out, imageio.ExportOptions{Progress: bar.Update})
			bar.Done()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "    %d chunks written, %d zero chunks left as holes, in %s\n", ex.Written, ex.Zero, ex.Elapsed.Round(1e6))

			say("comparing the exported disk with the source (sha256)")
			h1, err := sha256File(disk)
			if err != nil {
				return err
			}
			h2, err := sha256File(out)
			if err != nil {
				return err
			}
			if h1 != h2 {
				return errors.New("the exported disk differs from the source")
			}
			fmt.Fprintf(a.Stdout, "    identical: %x\n", h1)

			say("verifying every chunk in the store")
			rep, err := s.Verify(ctx, 8, nil)
			if err != nil {
				return err
			}
			if len(rep.Problems) > 0 {
				return fmt.Errorf("store verify found %d problems", len(rep.Problems))
			}
			fmt.Fprintf(a.Stdout, "    %d versions, %d chunks: all good\n", rep.Versions, rep.Chunks)
			fmt.Fprintf(a.Stdout, "\nTry next (after go build -o bin/tms ./cmd/tms):\n  bin/tms image ls --store %[1]s\n  bin/tms image show --store %[1]s sample\n  bin/tms image export --store %[1]s sample@%[2]s older-version.raw\n  bin/tms store verify --store %[1]s\n", storeDir, first.Version.ID.Short())
			return nil
		},
	}
	c.Flags().StringVar(&dataDir, "data", "tms-store-demo", "directory for the sample disk, the store and the exported copy")
	c.Flags().Int64Var(&size, "size", 256<<20, "size of the sample disk in bytes")
	return c
}

func (a *App) devDisk() *cobra.Command {
	var size int64
	var seed uint64
	c := &cobra.Command{
		Use:   "disk [--size BYTES] [--seed N] FILE",
		Short: "Write a sample disk image: GPT, random, text-like and empty regions (the same seed gives the same bytes)",
		Args:  exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sampledisk.Write(args[0], sampledisk.Options{Size: size, Seed: seed}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "wrote a %s sample disk to %s\n", humanBytes(size), args[0])
			return nil
		},
	}
	c.Flags().Int64Var(&size, "size", 1<<30, "size in bytes (a multiple of 4096, at least 4 MiB)")
	c.Flags().Uint64Var(&seed, "seed", 1, "seed of the contents")
	return c
}

func (a *App) devMutate() *cobra.Command {
	var fraction float64
	var seed uint64
	c := &cobra.Command{
		Use:   "mutate [--fraction F] [--seed N] FILE",
		Short: "Overwrite a fraction of a disk image's 4 KiB blocks, at random offsets, with random bytes",
		Args:  exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fraction <= 0 || fraction > 1 {
				return usageError{fmt.Errorf("--fraction %v: want a number in (0, 1]", fraction)}
			}
			offs, err := sampledisk.Mutate(args[0], fraction, seed)
			if err != nil {
				return err
			}
			chunks := map[int64]bool{}
			for _, o := range offs {
				chunks[o/imageio.DefaultChunkSize] = true
			}
			fmt.Fprintf(a.Stdout, "changed %d blocks of 4 KiB in %s, touching %d chunks of %s\n", len(offs), args[0], len(chunks), humanBytes(imageio.DefaultChunkSize))
			return nil
		},
	}
	c.Flags().Float64Var(&fraction, "fraction", 0.01, "fraction of the 4 KiB blocks to change")
	c.Flags().Uint64Var(&seed, "seed", 2, "seed of the offsets and bytes")
	return c
}

func sha256File(p string) ([32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}
