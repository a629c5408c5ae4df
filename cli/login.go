package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"tms/auth"
	"tms/centralapi"
	"tms/config"
	"tms/internal/atomicfile"
	"tms/workers"
)

// devCentral is central's HTTP service in tms dev, where the CLI logs in when nothing says
// otherwise.
const devCentral = "http://127.0.0.1:8300"

// credentials are what tms login keeps for the commands that follow.
type credentials struct {
	Central string    `json:"central"`
	User    string    `json:"user"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// maxCredentials bounds the credentials file.
const maxCredentials = 16 << 10

// credentialsPath is $XDG_CONFIG_HOME/tms/credentials.json, else ~/.config/tms/credentials.json;
// "" when neither variable is set.
func (a *App) credentialsPath() string {
	if d, ok := a.Env("XDG_CONFIG_HOME"); ok && d != "" {
		return filepath.Join(d, "tms", "credentials.json")
	}
	if h, ok := a.Env("HOME"); ok && h != "" {
		return filepath.Join(h, ".config", "tms", "credentials.json")
	}
	return ""
}

// loadCredentials reads the stored login; nil, nil when there is none.
func (a *App) loadCredentials() (*credentials, error) {
	p := a.credentialsPath()
	if p == "" {
		return nil, nil
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentials+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCredentials {
		return nil, fmt.Errorf("%s is larger than %d bytes: remove it and run tms login", p, maxCredentials)
	}
	var c credentials
	if err := json.Unmarshal(b, &c); err != nil || c.Token == "" {
		return nil, fmt.Errorf("%s is damaged: run tms login", p)
	}
	return &c, nil
}

// loginToken returns the stored login's user and token for the commands that talk to
// Temporal; an expired login is an error that says when and what to do.
func (a *App) loginToken() (*credentials, error) {
	c, err := a.loadCredentials()
	if err != nil || c == nil {
		return nil, err
	}
	if !time.Now().Before(c.Expires) {
		return nil, &auth.ExpiredError{At: c.Expires}
	}
	return c, nil
}

// centralURL is where tms login and tms user go: --central, else cli.central_url, else the
// stored login's central (for the commands after login), else tms dev's.
func (a *App) centralURL(flag string, stored *credentials) (*url.URL, error) {
	s := flag
	if s == "" {
		cfg, err := config.Load(config.LoadOptions{File: a.configFile, Env: a.Env, Role: config.RoleCLI})
		if err != nil {
			return nil, err
		}
		if cfg.CLI.CentralURL != nil {
			s = cfg.CLI.CentralURL.String()
		}
	}
	if s == "" && stored != nil {
		s = stored.Central
	}
	if s == "" {
		s = devCentral
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Errorf("--central %q: want http(s)://host:port", s)}
	}
	// A password or token never travels in clear text off this machine.
	if u.Scheme == "http" && !workers.IsLoopback(u.Host) {
		return nil, fmt.Errorf("central at %s is plain http on another machine: a password or token would travel in clear text; use https:// (central.tls)", u.Redacted())
	}
	return u, nil
}

// centralCall sends one request to central's HTTP API and decodes its JSON answer into out.
func centralCall(ctx context.Context, base *url.URL, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base.String(), "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach central at %s: %w", base.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("central at %s: %w", base.Redacted(), err)
	}
	if resp.StatusCode >= 300 {
		var e centralapi.Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("central at %s answered %s", base.Redacted(), resp.Status)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("central at %s: bad answer: %w", base.Redacted(), err)
		}
	}
	return nil
}

// readPassword reads a password: one line of stdin with --password-stdin, else from the
// terminal without echo (twice when confirm).
func (a *App) readPassword(fromStdin, confirm bool, prompt string) (string, error) {
	if fromStdin {
		r := bufio.NewReader(io.LimitReader(a.stdin(), auth.MaxPasswordLen+2))
		line, err := r.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) > auth.MaxPasswordLen {
			return "", fmt.Errorf("password longer than %d bytes", auth.MaxPasswordLen)
		}
		if line == "" {
			return "", errors.New("no password on stdin")
		}
		return line, nil
	}
	f, ok := a.stdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usageError{errors.New("stdin is not a terminal: give the password on stdin with --password-stdin")}
	}
	read := func(p string) (string, error) {
		fmt.Fprint(a.Stderr, p)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.Stderr)
		return string(b), err
	}
	pw, err := read(prompt)
	if err != nil || !confirm {
		return pw, err
	}
	again, err := read("again: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", errors.New("the two passwords differ")
	}
	return pw, nil
}

func (a *App) stdin() io.Reader {
	if a.Stdin != nil {
		return a.Stdin
	}
	return os.Stdin
}

func (a *App) loginCommand() *cobra.Command {
	var central string
	var fromStdin bool
	c := &cobra.Command{
		Use:   "login NAME [--password-stdin] [--central URL]",
		Short: "Log in to central: the commands that follow act as NAME until the login expires (12h)",
		Long: `Log in to central's HTTP service with NAME's password and keep the token it returns, with its
expiry, in $XDG_CONFIG_HOME/tms/credentials.json (else ~/.config/tms/credentials.json, mode 0600).
Every command that talks to Temporal sends it; what NAME may do is up to their role (admin,
operator, viewer: docs/security.md). The password goes to central only, over https, or plain
http to a loopback address (tms dev).`,
		Args: exactArgs(1, "the user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			prev, _ := a.loadCredentials() // logging in again goes where the last login went
			u, err := a.centralURL(central, prev)
			if err != nil {
				return err
			}
			if err := auth.ValidateUserName(args[0]); err != nil {
				return usageError{err}
			}
			pw, err := a.readPassword(fromStdin, false, "password for "+args[0]+": ")
			if err != nil {
				return err
			}
			var lr centralapi.LoginResponse
			if err := centralCall(cmd.Context(), u, "POST", "/v1/login", "", centralapi.LoginRequest{User: args[0], Password: pw}, &lr); err != nil {
				return fmt.Errorf("login refused: %w", err)
			}
			p := a.credentialsPath()
			if p == "" {
				return errors.New("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the login")
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			b, _ := json.MarshalIndent(credentials{Central: u.String(), User: lr.User, Token: lr.Token, Expires: lr.Expires}, "", "  ")
			if err := atomicfile.Write(p, bytes.NewReader(append(b, '\n')), 0o600); err != nil {
				return fmt.Errorf("keeping the login: %w", err)
			}
			regions := ""
			if len(lr.Regions) > 0 {
				regions = " in " + strings.Join(lr.Regions, ", ")
			}
			fmt.Fprintf(a.Stdout, "logged in as %s (%s%s) until %s\n", lr.User, lr.Role, regions, lr.Expires.Local().Format(time.DateTime+" MST"))
			return nil
		},
	}
	c.Flags().StringVar(&central, "central", "", "central's HTTP service (default: cli.central_url from the config, else the last login's, else "+devCentral+", tms dev's)")
	c.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")
	return c
}

func (a *App) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Forget the login tms login kept",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := a.credentialsPath()
			if p == "" {
				return nil
			}
			err := os.Remove(p)
			if errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintln(a.Stdout, "not logged in")
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, "logged out")
			return nil
		},
	}
}

// adminCall is a call to central's user API with the stored login.
func (a *App) adminCall(ctx context.Context, central, method, path string, in, out any) error {
	cr, err := a.loginToken()
	if err != nil {
		return err
	}
	if cr == nil {
		return errors.New("not logged in: run tms login NAME (an admin) first")
	}
	u, err := a.centralURL(central, cr)
	if err != nil {
		return err
	}
	return centralCall(ctx, u, method, path, cr.Token, in, out)
}

func (a *App) userCommand() *cobra.Command {
	var central string
	c := &cobra.Command{
		Use:   "user",
		Short: "Manage the people who may use tms (admins only): add, rm, passwd, ls",
	}
	c.PersistentFlags().StringVar(&central, "central", "", "central's HTTP service (default: the one of the login)")

	var role string
	var regions []string
	var fromStdin bool
	add := &cobra.Command{
		Use:   "add NAME --role ROLE [--region R]... [--password-stdin]",
		Short: "Add a user: admin (everything), operator (tasks and inventory in the regions granted) or viewer (read only)",
		Args:  exactArgs(1, "the user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "role", role); err != nil {
				return err
			}
			if err := centralapi.CheckUser(args[0], role, regions, strings.Repeat("x", auth.MinPasswordLen)); err != nil {
				return usageError{err}
			}
			pw, err := a.readPassword(fromStdin, true, "password for "+args[0]+": ")
			if err != nil {
				return err
			}
			var ui centralapi.UserInfo
			if err := a.adminCall(cmd.Context(), central, "POST", "/v1/users", centralapi.AddUserRequest{Name: args[0], Role: role, Regions: regions, Password: pw}, &ui); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "user %s added (%s%s)\n", ui.Name, ui.Role, regionsText(ui.Regions))
			return nil
		},
	}
	add.Flags().StringVar(&role, "role", "", "admin, operator or viewer")
	add.Flags().StringSliceVar(&regions, "region", nil, "a region the operator or viewer is granted (repeat)")
	add.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")

	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a user (not the last admin); their login ends when its token expires",
		Args:  exactArgs(1, "the user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidateUserName(args[0]); err != nil {
				return usageError{err}
			}
			if err := a.adminCall(cmd.Context(), central, "DELETE", "/v1/users/"+args[0], nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "user %s removed\n", args[0])
			return nil
		},
	}

	var pwStdin bool
	passwd := &cobra.Command{
		Use:   "passwd NAME [--password-stdin]",
		Short: "Set a user's password (an admin: anyone's; others: their own)",
		Args:  exactArgs(1, "the user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidateUserName(args[0]); err != nil {
				return usageError{err}
			}
			pw, err := a.readPassword(pwStdin, true, "new password for "+args[0]+": ")
			if err != nil {
				return err
			}
			if err := auth.CheckPasswordRules(pw); err != nil {
				return err
			}
			if err := a.adminCall(cmd.Context(), central, "PUT", "/v1/users/"+args[0]+"/password", centralapi.PasswordRequest{Password: pw}, nil); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "password of %s changed\n", args[0])
			return nil
		},
	}
	passwd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of stdin")

	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List the users, their roles and regions",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var us []centralapi.UserInfo
			if err := a.adminCall(cmd.Context(), central, "GET", "/v1/users", nil, &us); err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(us)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USER\tROLE\tREGIONS\tCREATED")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, u.Role, dash(strings.Join(u.Regions, ",")), u.Created.Local().Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(add, rm, passwd, ls)
	return c
}

func regionsText(rs []string) string {
	if len(rs) == 0 {
		return ""
	}
	return " in " + strings.Join(rs, ", ")
}

// regionTokenCommand mints a production region's worker token (tms region token REGION).
func (a *App) regionTokenCommand() *cobra.Command {
	var central, expires string
	c := &cobra.Command{
		Use:   "token REGION [--expires 720h]",
		Short: "Print a worker token for a region's server (admins): set it as region.temporal.api_key",
		Long: `Ask central for a worker token for REGION's server and print it. Set it as region.temporal.api_key
(TMS_REGION_TEMPORAL_API_KEY) on that region's server: with tms's authorizer on the Temporal frontend,
it lets that server poll its own region's task queues only. Mint a new one before it expires
(--expires, default 720h) and restart the region's server with it.`,
		Args: exactArgs(1, "the region id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidateRegion(args[0]); err != nil {
				return usageError{err}
			}
			var rt centralapi.RegionTokenResponse
			if err := a.adminCall(cmd.Context(), central, "POST", "/v1/regions/"+args[0]+"/token", centralapi.RegionTokenRequest{Expires: expires}, &rt); err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, rt.Token)
			fmt.Fprintf(a.Stderr, "region %s's token, valid until %s\n", rt.Region, rt.Expires.Local().Format(time.DateTime+" MST"))
			return nil
		},
	}
	c.Flags().StringVar(&central, "central", "", "central's HTTP service (default: the one of the login)")
	c.Flags().StringVar(&expires, "expires", "720h", "how long the token lasts")
	return c
}
