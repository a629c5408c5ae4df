package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tms/activities"
)

// regionImages is what `tms image ls --region R --json` prints.
type regionImages struct {
	Region string
	Store  activities.StoreInfo
	Images []activities.ImageDescriptor
	// Count is how many versions the store holds; Images lists at most
	// activities.MaxReportedImages of them, oldest stored first.
	Count int
}

// regionImageLs lists what a region's store holds, through the region's service workflow.
func (a *App) regionImageLs(cmd *cobra.Command, region string, asJSON bool) error {
	res, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpImages})
	if err != nil {
		return err
	}
	out := regionImages{Region: region, Images: res.Images, Count: res.ImageCount}
	if res.Store != nil {
		out.Store = *res.Store
	}
	if out.Images == nil {
		out.Images = []activities.ImageDescriptor{}
	}
	if asJSON {
		return a.printJSON(out)
	}
	fmt.Fprintf(a.Stdout, "region %s: %s\n", region, storeLine(out.Store, out.Count))
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTAGS\tVERSION\tSIZE\tSTORED\tLAST DEPLOYED\tPINNED/HELD BY")
	for _, im := range out.Images {
		last := "-"
		if !im.LastDeployed.IsZero() {
			last = im.LastDeployed.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.Name, dash(strings.Join(im.Tags, ",")), short(im.Version), imageSize(im),
			im.Stored.Local().Format(time.DateTime), last, dash(heldBy(im)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if out.Count > len(out.Images) {
		fmt.Fprintf(a.Stdout, "(%d more not listed: the oldest stored %d are)\n", out.Count-len(out.Images), len(out.Images))
	}
	return nil
}

// imageSize is a version's stored bytes, with the part only it holds when that is less.
func imageSize(im activities.ImageDescriptor) string {
	if im.OwnBytes < im.StoredBytes {
		return fmt.Sprintf("%s (%s own)", humanBytes(im.StoredBytes), humanBytes(im.OwnBytes))
	}
	return humanBytes(im.StoredBytes)
}

// heldBy says what keeps a version: its pin and its holders with their expiry.
func heldBy(im activities.ImageDescriptor) string {
	var parts []string
	if im.Pinned {
		p := "pinned"
		if im.PinnedBy != "" {
			p += " by " + im.PinnedBy
		}
		parts = append(parts, p)
	}
	for _, h := range im.Holds {
		parts = append(parts, fmt.Sprintf("%s until %s", h.Holder, h.Until.Local().Format("01-02 15:04")))
	}
	return strings.Join(parts, ", ")
}

// storeLine says how full a region's store is: "1.2 GiB of 2.0 GiB used (60%), high water
// 90%, low water 80%, 3 images".
func storeLine(s activities.StoreInfo, images int) string {
	if s.Capacity <= 0 {
		return fmt.Sprintf("%s used, capacity unknown, %d image versions", humanBytes(s.Used), images)
	}
	line := fmt.Sprintf("%s of %s used (%.0f%%), high water %.0f%%", humanBytes(s.Used), humanBytes(s.Capacity),
		100*float64(s.Used)/float64(s.Capacity), 100*s.HighWater)
	if s.LowWater > 0 {
		line += fmt.Sprintf(", low water %.0f%%", 100*s.LowWater)
	}
	if s.HighWater > 0 && float64(s.Used) > s.HighWater*float64(s.Capacity) {
		line += " (ABOVE HIGH WATER)"
	}
	return line + fmt.Sprintf(", %d image versions", images)
}

// imagePin makes `tms image pin` (pin true) and `tms image unpin`.
func (a *App) imagePin(pin bool) *cobra.Command {
	var region string
	use, short, op, done := "pin", "Keep an image version in a region's store until unpinned: eviction and rm leave it", activities.OpPin, "pinned"
	if !pin {
		use, short, op, done = "unpin", "Let eviction remove a pinned image version again", activities.OpUnpin, "unpinned"
	}
	c := &cobra.Command{
		Use:   use + " --region REGION IMAGE",
		Short: short,
		Long: short + `.
IMAGE is NAME (its latest tag), NAME:TAG or NAME@VERSION, resolved in central's catalog (a
region's store keeps versions, not central's tags). A pin
is a hold that does not expire: eviction never removes a pinned version, and 'tms image rm'
refuses it, naming the pin.`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := parseRef(args[0]); err != nil {
				return err
			}
			if err := requireFlag(cmd, "region", region); err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			// An image central does not know (imported into the region's store by hand) is
			// resolved by the region.
			image, err := c.centralVersion(ctx, args[0])
			var nic *notInCatalogError
			if errors.As(err, &nic) {
				image, err = args[0], nil
			}
			if err != nil {
				return err
			}
			// The pin records who set it, as every task records who started it.
			res, err := c.regionAdmin(ctx, region, activities.AdminInput{Op: op, Image: image, By: c.user})
			if err != nil {
				return err
			}
			what := args[0]
			if len(res.Images) == 1 {
				what = res.Images[0].Name + "@" + short12(res.Images[0].Version)
			}
			switch {
			case res.Changed:
				fmt.Fprintf(a.Stdout, "%s %s in region %s\n", done, what, region)
			case pin:
				fmt.Fprintf(a.Stdout, "%s was pinned in region %s already\n", what, region)
			default:
				fmt.Fprintf(a.Stdout, "%s was not pinned in region %s\n", what, region)
			}
			return nil
		},
	}
	regionFlag(c, &region)
	return c
}

func short12(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}
