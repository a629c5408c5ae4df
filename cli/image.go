package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"tms/imageio"
	"tms/manifest"
	"tms/store"
)

func (a *App) imageCommand() *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Import, export, list, show and remove disk images"}
	c.AddCommand(a.imageImport(), a.imageExport(), a.imageLs(), a.imageShow(), a.imageRm())
	c.AddCommand(a.imageCapture(), a.imageShare(), a.imagePin(true), a.imagePin(false))
	return c
}

func storeFlag(c *cobra.Command, loc *string) {
	c.Flags().StringVar(loc, "store", "", "image store: a directory or s3://bucket/prefix (required)")
}

func parseRef(s string) (manifest.Ref, error) {
	r, err := manifest.ParseRef(s)
	if err != nil {
		return r, usageError{err}
	}
	return r, nil
}

// resolve opens the store at loc and finds the version refArg names.
func (a *App) resolve(ctx context.Context, cmd *cobra.Command, loc, refArg string) (*store.Store, *store.Version, error) {
	ref, err := parseRef(refArg)
	if err != nil {
		return nil, nil, err
	}
	s, err := a.openStore(ctx, cmd, loc, false)
	if err != nil {
		return nil, nil, err
	}
	v, err := s.Resolve(ctx, ref)
	return s, v, err
}

func (a *App) imageImport() *cobra.Command {
	var loc string
	var jobs int
	var chunkSize int64
	var hash string
	c := &cobra.Command{
		Use:   "import --store STORE NAME[:TAG] FILE",
		Short: "Import a raw disk image or block device as a new version of NAME[:TAG]",
		Long: `Import reads FILE (a raw disk image or a block device), stores the chunks the store does not
hold yet, and points NAME:TAG (default tag "latest") at the new version, whose parent is the
version the tag pointed to before. If the disk is unchanged, no version is made.
Interrupted imports keep the chunks they stored: run the same command again to continue.`,
		Args: exactArgs(2, "NAME[:TAG] and FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			if ref.Version != "" {
				return usageError{fmt.Errorf("import takes NAME or NAME:TAG, not a version (%s)", args[0])}
			}
			if err := manifest.ValidateDiskName(ref.Name); err != nil {
				return usageError{err}
			}
			ctx := cmd.Context()
			s, err := a.openStore(ctx, cmd, loc, true)
			if err != nil {
				return err
			}
			bar := newProgressBar(a.Stderr, a.progressOn(), "import")
			res, err := imageio.Import(ctx, s, args[1], imageio.ImportOptions{
				Name: ref.Name, Tag: ref.Tag, Jobs: jobs, ChunkSize: chunkSize, Hash: manifest.Hash(hash),
				Progress: bar.Update, Log: a.log,
			})
			bar.Done()
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return fmt.Errorf("import of %s interrupted: nothing was published; the chunks stored so far are kept, run the same command again to continue: %w", args[1], err)
				}
				return fmt.Errorf("import of %s failed, nothing was published: %w", args[1], err)
			}
			v := res.Version
			if res.Unchanged {
				fmt.Fprintf(a.Stdout, "%s:%s unchanged at %s: nothing added (%s read in %s, %s)\n",
					ref.Name, ref.Tag, v.ID.Short(), humanBytes(res.DiskSize), res.Elapsed.Round(time.Millisecond), rate(res.DiskSize, res.Elapsed))
				return nil
			}
			parent := "none"
			if !v.Manifest.Parent.IsZero() {
				parent = v.Manifest.Parent.Short()
			}
			fmt.Fprintf(a.Stdout, "imported %s:%s as %s (parent %s): %s disk, %d chunks (%d zero, %d distinct), stored %s, added %s in %d chunks, in %s (%s)\n",
				ref.Name, ref.Tag, v.ID.Short(), parent, humanBytes(res.DiskSize), res.Chunks, res.Zero, res.Distinct,
				humanBytes(res.Stats.StoredBytes), humanBytes(res.Stats.AddedBytes), res.Stats.AddedChunks,
				res.Elapsed.Round(time.Millisecond), rate(res.DiskSize, res.Elapsed))
			return nil
		},
	}
	storeFlag(c, &loc)
	c.Flags().IntVar(&jobs, "jobs", 0, "chunks processed at once (default: 2 per CPU, at least 16 on S3)")
	c.Flags().Int64Var(&chunkSize, "chunk-size", 0, fmt.Sprintf("chunk size in bytes, a power of two from 64 KiB to 64 MiB (default: the current version's, or %d for a new image)", imageio.DefaultChunkSize))
	c.Flags().StringVar(&hash, "hash", "", fmt.Sprintf("chunk hash, blake3 or sha256 (default: the current version's, or %s for a new image)", manifest.DefaultHash))
	return c
}

func (a *App) imageExport() *cobra.Command {
	var loc string
	var jobs int
	c := &cobra.Command{
		Use:   "export --store STORE REF FILE",
		Short: "Write an image version to a file or block device",
		Long: `Export writes the version REF names (NAME, NAME:TAG or NAME@VERSION) to FILE: a new or existing
file, or a block device at least as large as the disk. Ranges of FILE that already hold the
right bytes are not written again; zero ranges become holes in files. Every chunk is checked
against its hash before it is written.`,
		Args: exactArgs(2, "REF and FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, v, err := a.resolve(ctx, cmd, loc, args[0])
			if err != nil {
				return err
			}
			bar := newProgressBar(a.Stderr, a.progressOn(), "export")
			res, err := imageio.Export(ctx, s, v, args[1], imageio.ExportOptions{Jobs: jobs, Progress: bar.Update, Log: a.log})
			bar.Done()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "exported %s@%s to %s: %s disk, %d chunks written (%s), %d already right, %d zero, in %s (%s)\n",
				v.Manifest.Meta.Name, v.ID.Short(), args[1], humanBytes(res.DiskSize), res.Written, humanBytes(res.WrittenBytes),
				res.Skipped, res.Zero, res.Elapsed.Round(time.Millisecond), rate(res.DiskSize, res.Elapsed))
			return nil
		},
	}
	storeFlag(c, &loc)
	c.Flags().IntVar(&jobs, "jobs", 0, "chunks fetched and written at once (default: 2 per CPU, at least 16 on S3)")
	return c
}

// imageRow is one line of `tms image ls`.
type imageRow struct {
	Name      string    `json:"name"`
	Tags      []string  `json:"tags"`
	Version   string    `json:"version"`
	Parent    string    `json:"parent,omitempty"`
	Created   time.Time `json:"created"`
	DiskSize  int64     `json:"disk_size"`
	ChunkSize int64     `json:"chunk_size"`
	Chunks    int       `json:"chunks"`
	Source    string    `json:"source,omitempty"`
}

func (a *App) imageLs() *cobra.Command {
	var loc, region string
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls [--store STORE | --region REGION] [--json]",
		Short: "List the images and versions in central's catalog, in a store, or in a region's store",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if region != "" {
				if loc != "" {
					return usageError{errors.New("--store and --region: give one")}
				}
				return a.regionImageLs(cmd, region, asJSON)
			}
			if loc == "" {
				return a.catalogImageLs(cmd, asJSON)
			}
			ctx := cmd.Context()
			s, err := a.openStore(ctx, cmd, loc, false)
			if err != nil {
				return err
			}
			tags, err := s.Tags(ctx)
			if err != nil {
				return err
			}
			byVersion := map[manifest.ID][]string{}
			for _, t := range tags {
				byVersion[t.Version] = append(byVersion[t.Version], t.Tag)
			}
			ids, err := s.VersionIDs(ctx)
			if err != nil {
				return err
			}
			rows := []imageRow{}
			for _, id := range ids {
				v, err := s.GetManifest(ctx, id)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				m := v.Manifest
				row := imageRow{Name: m.Meta.Name, Tags: byVersion[id], Version: id.String(), Created: m.Meta.Created,
					DiskSize: m.DiskSize, ChunkSize: m.ChunkSize, Chunks: len(m.Chunks), Source: m.Meta.Source}
				if row.Tags == nil {
					row.Tags = []string{}
				}
				if !m.Parent.IsZero() {
					row.Parent = m.Parent.String()
				}
				rows = append(rows, row)
			}
			sort.Slice(rows, func(i, j int) bool {
				if rows[i].Name != rows[j].Name {
					return rows[i].Name < rows[j].Name
				}
				if !rows[i].Created.Equal(rows[j].Created) {
					return rows[i].Created.After(rows[j].Created)
				}
				// Same second: a child before its parent, so the newest comes first.
				if rows[i].Parent == rows[j].Version || rows[j].Parent == rows[i].Version {
					return rows[i].Parent == rows[j].Version
				}
				return rows[i].Version < rows[j].Version
			})
			if asJSON {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTAGS\tVERSION\tCREATED\tDISK SIZE")
			for _, r := range rows {
				tagList := strings.Join(r.Tags, ",")
				if tagList == "" {
					tagList = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, tagList, r.Version[:12], r.Created.Local().Format(time.DateTime), humanBytes(r.DiskSize))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&loc, "store", "", "list this image store (a directory or s3://bucket/prefix) instead of central's catalog")
	c.Flags().StringVar(&region, "region", "", "list what this region's store holds: size, when stored and last deployed, pins and holds")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// imageDetail is the output of `tms image show`.
type imageDetail struct {
	Version        string                   `json:"version"`
	Name           string                   `json:"name"`
	Tags           []string                 `json:"tags"`
	Parent         string                   `json:"parent,omitempty"`
	Created        time.Time                `json:"created"`
	Source         string                   `json:"source,omitempty"`
	Hash           manifest.Hash            `json:"hash"`
	DiskSize       int64                    `json:"disk_size"`
	ChunkSize      int64                    `json:"chunk_size"`
	Chunks         int                      `json:"chunks"`
	ZeroChunks     int                      `json:"zero_chunks"`
	DistinctChunks int                      `json:"distinct_chunks"`
	StoredBytes    int64                    `json:"stored_bytes"`
	AddedBytes     *int64                   `json:"added_bytes"`
	Partitions     *manifest.PartitionTable `json:"partitions,omitempty"`
	// Holds are the tasks using the version now (see 'tms store holds').
	Holds []holdRow `json:"holds"`
	// Signer is the key id of central's signature stored with the version (empty: none), and
	// Signature the signature. tms image show does not check it; regions and agents do.
	Signer    string `json:"signer"`
	Signature []byte `json:"signature,omitempty"`
}

func (a *App) imageShow() *cobra.Command {
	var loc string
	var asJSON bool
	c := &cobra.Command{
		Use:   "show --store STORE REF [--json]",
		Short: "Show one image version: ids, sizes, chunks, partitions and who signed it",
		Args:  exactArgs(1, "REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, v, err := a.resolve(ctx, cmd, loc, args[0])
			if err != nil {
				return err
			}
			d, err := describe(ctx, s, v)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(d)
			}
			return a.printDetail(d)
		},
	}
	storeFlag(c, &loc)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func describe(ctx context.Context, s *store.Store, v *store.Version) (*imageDetail, error) {
	m := v.Manifest
	d := &imageDetail{Version: v.ID.String(), Name: m.Meta.Name, Tags: []string{}, Created: m.Meta.Created, Source: m.Meta.Source,
		Hash: m.Hash, DiskSize: m.DiskSize, ChunkSize: m.ChunkSize, Chunks: len(m.Chunks), Partitions: m.Meta.Partitions}
	if !m.Parent.IsZero() {
		d.Parent = m.Parent.String()
	}
	switch sig, err := s.GetSignature(ctx, v.ID); {
	case err == nil:
		d.Signer, d.Signature = sig.KeyID, sig.Signature
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	tags, err := s.Tags(ctx)
	if err != nil {
		return nil, err
	}
	holds, err := s.Holds(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	d.Holds = holdRows(holds, time.Now())
	for _, t := range tags {
		if t.Version == v.ID {
			d.Tags = append(d.Tags, t.Name+":"+t.Tag)
		}
	}
	distinct := map[manifest.ID]struct{}{}
	for _, id := range m.Chunks {
		if id.IsZero() {
			d.ZeroChunks++
		} else {
			distinct[id] = struct{}{}
		}
	}
	d.DistinctChunks = len(distinct)
	st, err := s.GetStats(ctx, v.ID)
	switch {
	case err == nil:
		d.StoredBytes, d.AddedBytes = st.StoredBytes, &st.AddedBytes
	case errors.Is(err, store.ErrNotFound):
		// Published without stats (copied from elsewhere): add up what the store holds.
		var sum int64
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(16)
		sizes := make(chan int64, len(distinct))
		for id := range distinct {
			g.Go(func() error {
				n, err := s.StatChunk(gctx, id)
				sizes <- n
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		close(sizes)
		for n := range sizes {
			sum += n
		}
		d.StoredBytes = sum
	default:
		return nil, err
	}
	return d, nil
}

func (a *App) printDetail(d *imageDetail) error {
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	p := func(k, f string, args ...any) { fmt.Fprintf(tw, k+":\t"+f+"\n", args...) }
	p("Version", "%s", d.Version)
	p("Name", "%s", d.Name)
	p("Tags", "%s", strings.Join(d.Tags, ", "))
	parent := d.Parent
	if parent == "" {
		parent = "none"
	}
	p("Parent", "%s", parent)
	p("Created", "%s", d.Created.Local().Format(time.DateTime))
	p("Source", "%s", d.Source)
	p("Disk size", "%s (%d bytes)", humanBytes(d.DiskSize), d.DiskSize)
	p("Chunk size", "%s, hash %s", humanBytes(d.ChunkSize), d.Hash)
	p("Chunks", "%d (%d zero, %d distinct)", d.Chunks, d.ZeroChunks, d.DistinctChunks)
	p("Stored", "%s", humanBytes(d.StoredBytes))
	if d.Signer != "" {
		p("Signature", "signed by %s", d.Signer)
	} else {
		p("Signature", "NOT SIGNED")
	}
	if d.AddedBytes != nil {
		p("Added", "%s (new to this store when this version was published)", humanBytes(*d.AddedBytes))
	} else {
		p("Added", "unknown (published without stats)")
	}
	if len(d.Holds) == 0 {
		p("In use", "no")
	}
	for i, h := range d.Holds {
		label := "In use:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(tw, "%s\tby %s until %s\n", label, h.Holder, h.untilText())
	}
	if pt := d.Partitions; pt != nil {
		p("Partitions", "%s", pt.Scheme)
		for _, part := range pt.Partitions {
			name := part.Name
			if name != "" {
				name = " \"" + name + "\""
			}
			fmt.Fprintf(tw, "  %d\t%s%s at %s, %s\n", part.Index, part.Type, name, humanBytes(part.Start), humanBytes(part.Size))
		}
	}
	return tw.Flush()
}

func (a *App) imageRm() *cobra.Command {
	var loc string
	c := &cobra.Command{
		Use:   "rm --store STORE REF",
		Short: "Remove an image (NAME), a tag (NAME:TAG) or a version (NAME@VERSION)",
		Long: `Remove deletes what REF names:
  NAME          the whole image: every tag and every version of NAME
  NAME:TAG      the tag, and its version unless another tag points to it
  NAME@VERSION  the version, and every tag that points to it
The chunks are freed by 'tms store gc'. A version in use by a task (a deploy streaming it, a
region pulling it; see 'tms store holds') is not removed: rm fails, names the task and when its
hold lapses, and removes nothing.`,
		Args: exactArgs(1, "REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			s, err := a.openStore(ctx, cmd, loc, false)
			if err != nil {
				return err
			}
			rm, err := s.Remove(ctx, ref)
			if err != nil {
				return err
			}
			var tags, versions []string
			for _, t := range rm.Tags {
				tags = append(tags, t.Name+":"+t.Tag)
			}
			for _, id := range rm.Versions {
				versions = append(versions, id.Short())
			}
			fmt.Fprintf(a.Stdout, "removed %d tag(s) [%s] and %d version(s) [%s]; run 'tms store gc' to free their chunks\n",
				len(tags), strings.Join(tags, " "), len(versions), strings.Join(versions, " "))
			return nil
		},
	}
	storeFlag(c, &loc)
	return c
}
