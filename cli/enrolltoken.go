package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"tms/activities"
	"tms/state"
)

func (a *App) terminalEnrollToken() *cobra.Command {
	var region, group string
	var ttl time.Duration
	var rekey bool
	c := &cobra.Command{
		Use:   "enroll-token --region REGION [--group GROUP] [--ttl 1h] [--rekey]",
		Short: "Make a token the agent service of enrolled terminals trades, once each, for their agent key",
		Long: `enroll-token prints a new token, once: give it to the terminals' agent service
(tms-agent service --enroll-token TOKEN), which trades it over HTTPS for the terminal's agent
key and keeps the key. The region stores only the token's hash. It is refused for terminals not
enrolled (or not in --group), for a terminal that used it already, for one that has a key
(unless --rekey), and after --ttl (at most 168h).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "region", region); err != nil {
				return err
			}
			if ttl <= 0 || ttl > state.MaxEnrollTokenTTL {
				return usageError{fmt.Errorf("%s: --ttl must be between 0 and %s", cmd.CommandPath(), state.MaxEnrollTokenTTL)}
			}
			token, hash := state.NewEnrollToken()
			if _, err := a.regionAdmin(cmd, region, activities.AdminInput{Op: activities.OpEnrollToken, Group: group, TokenHash: hash, TTL: ttl, Rekey: rekey}); err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, token)
			who := "enrolled terminals of region " + region
			if group != "" {
				who = "enrolled terminals of group " + group + " in region " + region
			}
			fmt.Fprintf(a.Stderr, "the token above lets the %s get their agent key, once each, for %s; it is not shown again\n", who, roundDuration(ttl))
			return nil
		},
	}
	regionFlag(c, &region)
	c.Flags().StringVar(&group, "group", "", "only terminals of this group")
	c.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid (at most 168h)")
	c.Flags().BoolVar(&rekey, "rekey", false, "replace the key of terminals that have one")
	return c
}
