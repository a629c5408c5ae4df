// Package cli is the tms command line: `tms image …`, `tms store …`, `tms dev`, `tms version`.
// cmd/tms only calls Main; everything here takes its streams and environment from App so tests
// run the real commands in-process.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"golang.org/x/term"

	"tms/activities"
	"tms/config"
	"tms/store"
	"tms/store/s3store"
)

// Version is the tms release, set at build time with -ldflags "-X tms/cli.Version=…".
var Version = "dev"

// App holds what the commands talk to.
type App struct {
	Stdout, Stderr io.Writer
	// Stdin is where --password-stdin reads (default os.Stdin).
	Stdin io.Reader
	// Env looks up environment variables (default os.LookupEnv).
	Env func(string) (string, bool)
	// Progress forces progress bars on or off; nil means "when stderr is a terminal".
	Progress *bool
	// Now is the clock (default time.Now): task ids carry the time they were asked for.
	Now func() time.Time

	// plan, when set, receives the task a task command asks for instead of starting it: a
	// schedule reads its TASK... arguments this way.
	plan func(taskRequest) error
	// regions caches central's regions for the one command an App runs (tclient.regionInfo).
	regions []activities.RegionInfo

	configFile string
	logLevel   string
	cpuProfile string
	log        *slog.Logger
	temporal   temporalFlags // see temporal.go
}

func (a *App) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Main runs the tms command line with args and returns the exit status.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &App{Stdout: os.Stdout, Stderr: os.Stderr}
	return a.Run(ctx, args)
}

// Run runs one command line.
func (a *App) Run(ctx context.Context, args []string) int {
	if a.Env == nil {
		a.Env = os.LookupEnv
	}
	cmd := a.Command()
	cmd.SetArgs(args)
	cmd.SetOut(a.Stdout)
	cmd.SetErr(a.Stderr)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	// The authorizer's refusal says which rule refused in its reason, not its message.
	var pd *serviceerror.PermissionDenied
	if errors.As(err, &pd) && pd.Reason != "" && !strings.Contains(err.Error(), pd.Reason) {
		msg := err.Error()
		if i := strings.LastIndex(msg, pd.Message); i >= 0 && pd.Message != "" {
			msg = msg[:i] + "refused: " + pd.Reason + msg[i+len(pd.Message):]
		} else {
			msg += ": refused: " + pd.Reason
		}
		err = shownError{msg: msg, err: err}
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(a.Stderr, "tms: %v\nRun 'tms --help' for usage.\n", err)
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintf(a.Stderr, "tms: %v\n", err)
		return 130
	}
	fmt.Fprintf(a.Stderr, "tms: %v\n", err)
	return 1
}

type usageError struct{ error }

// shownError says err in other words.
type shownError struct {
	msg string
	err error
}

func (e shownError) Error() string { return e.msg }
func (e shownError) Unwrap() error { return e.err }

// Command builds the command tree.
func (a *App) Command() *cobra.Command {
	root := &cobra.Command{
		Use:           "tms",
		Short:         "tms manages the PCs of many classrooms: images, terminals, deployments",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", a.logLevel)}
			}
			a.log = slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: lvl}))
			if a.cpuProfile != "" {
				f, err := os.Create(a.cpuProfile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
			}
			return nil
		},
		PersistentPostRun: func(*cobra.Command, []string) {
			if a.cpuProfile != "" {
				pprof.StopCPUProfile()
			}
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&a.configFile, "config", "", "configuration file (YAML or TOML)")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&a.cpuProfile, "cpuprofile", "", "write a CPU profile of the command to this file")
	root.PersistentFlags().MarkHidden("cpuprofile")
	root.AddCommand(a.imageCommand(), a.storeCommand(), a.devCommand(), a.versionCommand())
	root.AddCommand(a.scheduleCommand(), a.planCommand())
	a.addTemporalFlags(root.PersistentFlags())
	// tms region runs a region's server; tms region ls lists the regions central knows.
	region := a.regionCommand()
	region.AddCommand(a.regionAdminCommand().Commands()...)
	region.AddCommand(a.regionConfigCommand())
	region.AddCommand(a.regionTokenCommand())
	root.AddCommand(a.centralCommand(), region, a.terminalCommand(), a.groupCommand(), a.deployCommand(), a.taskCommand())
	root.AddCommand(a.bootenvCommand())
	root.AddCommand(a.powerCommand())
	root.AddCommand(a.updateCommand())
	root.AddCommand(a.statusCommand())
	root.AddCommand(a.loginCommand(), a.logoutCommand(), a.userCommand())
	return root
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %s, got %d argument(s)", cmd.CommandPath(), names, len(args))}
		}
		return nil
	}
}

func (a *App) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the tms version",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			goVersion := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				goVersion = bi.GoVersion
			}
			fmt.Fprintf(a.Stdout, "tms %s (%s)\n", Version, goVersion)
			return nil
		},
	}
}

// progressOn says whether to draw progress bars.
func (a *App) progressOn() bool {
	if a.Progress != nil {
		return *a.Progress
	}
	f, ok := a.Stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (a *App) printJSON(v any) error { return jsonEncoder(a.Stdout).Encode(v) }

// jsonEncoder is how --json prints: indented.
func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}

// openStore opens the store at loc: a directory, or s3://bucket/prefix with the endpoint and
// keys from configuration. With create, a store that does not exist yet is made.
func (a *App) openStore(ctx context.Context, cmd *cobra.Command, loc string, create bool) (*store.Store, error) {
	if loc == "" {
		return nil, usageError{errors.New("--store is required: a directory or s3://bucket/prefix")}
	}
	var s3 config.S3
	if strings.HasPrefix(loc, "s3://") {
		if _, _, err := s3store.ParseLocation(loc); err != nil {
			return nil, usageError{err}
		}
		cfg, err := config.Load(config.LoadOptions{File: a.configFile, Env: a.Env, Role: config.RoleCLI})
		if err != nil {
			return nil, err
		}
		s3 = cfg.Store.S3
	}
	return a.storeAt(ctx, loc, s3, create)
}

// storeAt opens the store at loc, a directory or s3://bucket/prefix reached with s3; create
// makes a new store there if there is none.
func (a *App) storeAt(ctx context.Context, loc string, s3 config.S3, create bool) (*store.Store, error) {
	var b store.Backend
	if strings.HasPrefix(loc, "s3://") {
		bucket, prefix, err := s3store.ParseLocation(loc)
		if err != nil {
			return nil, err
		}
		if s3.Endpoint == "" {
			return nil, errors.New("store " + loc + ": no S3 endpoint configured: set store.s3.endpoint in the config file or TMS_STORE_S3_ENDPOINT")
		}
		b, err = s3store.New(ctx, s3store.Config{Endpoint: s3.Endpoint, Secure: !s3.Insecure, AccessKey: s3.AccessKey,
			SecretKey: s3.SecretKey, SessionToken: s3.SessionToken, Region: s3.Region, Bucket: bucket, Prefix: prefix})
		if err != nil {
			return nil, err
		}
	} else if create {
		d, err := store.NewDirWith(loc, store.DirOptions{Packs: true})
		if err != nil {
			return nil, err
		}
		b = d
	} else {
		d, err := store.OpenDirWith(loc, store.DirOptions{Packs: true})
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("no tms store at %s: the directory does not exist", loc)
		}
		if err != nil {
			return nil, err
		}
		b = d
	}
	s := store.New(b, store.Options{Log: a.log})
	if create {
		return s, s.Init(ctx)
	}
	return s, s.Check(ctx)
}
