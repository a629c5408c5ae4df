package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/config"
	"tms/workers"
	"tms/workflows"
)

// devFrontend is the frontend `tms dev` runs. The CLI uses it when no configuration names one,
// rather than config's localhost, which may resolve to ::1 where tms dev does not listen.
const devFrontend = "127.0.0.1:7233"

// temporalFlags are how the commands that work through Temporal reach it. The address and
// namespace may be given on the command line; TLS and the API key come from the configuration
// (central.temporal), like the address and namespace when no flag sets them.
type temporalFlags struct {
	address, namespace string
	// adminTimeout bounds the short inventory and catalog workflows.
	adminTimeout time.Duration
}

func (a *App) addTemporalFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.temporal.address, "temporal", "", "Temporal frontend host:port (default: central.temporal.address from the config, else "+devFrontend+", the frontend of 'tms dev')")
	fs.StringVar(&a.temporal.namespace, "namespace", "", "Temporal namespace (default: central.temporal.namespace from the config, else default)")
	fs.DurationVar(&a.temporal.adminTimeout, "admin-timeout", time.Minute, "how long to wait for a region's or central's worker to answer a listing or an inventory change")
	fs.MarkHidden("admin-timeout")
}

// temporalConfig is the Temporal connection the flags and the configuration describe.
func (a *App) temporalConfig() (config.Temporal, error) {
	cfg, err := config.Load(config.LoadOptions{File: a.configFile, Env: a.Env, Role: config.RoleCLI})
	if err != nil {
		return config.Temporal{}, err
	}
	t := cfg.Central.Temporal
	if t.Address == config.Defaults().Central.Temporal.Address {
		t.Address = devFrontend
	}
	if a.temporal.address != "" {
		t.Address = a.temporal.address
	}
	if a.temporal.namespace != "" {
		t.Namespace = a.temporal.namespace
	}
	if t.Namespace == "" {
		t.Namespace = client.DefaultNamespace
	}
	return t, nil
}

// tclient is a connection to Temporal with what the commands need to say where things are.
type tclient struct {
	client.Client
	cfg          config.Temporal
	adminTimeout time.Duration
	// user is the logged-in user ("" without a login): tasks record them as who started them.
	user string
	// regions are the regions central knows, as the command first asked (shared by the
	// clients one App dials; nil until asked).
	regions *[]activities.RegionInfo
}

// dial connects to Temporal; the caller closes the client.
func (a *App) dial(ctx context.Context) (*tclient, error) {
	if a.plan != nil {
		// A schedule is reading a command line: a task command hands its task over before it
		// talks to Temporal; anything else must not act.
		return nil, errNotTask
	}
	t, err := a.temporalConfig()
	if err != nil {
		return nil, err
	}
	// Without a logger the SDK would print its debug lines; ours shows warnings by default.
	log := a.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The login's token goes with every call (checked by tms's authorizer on the frontend);
	// without a login, none does. It travels in clear text only to a loopback frontend.
	cr, err := a.loginToken()
	if err != nil {
		return nil, err
	}
	var token func(context.Context) (string, error)
	user := ""
	if cr != nil && t.APIKey == "" {
		token = func(context.Context) (string, error) { return cr.Token, nil }
		user = cr.User
		t.Insecure = false // a login's token: TLS off loopback, whatever central.temporal.insecure says
	}
	c, err := workers.DialToken(ctx, t, log, token)
	if err != nil {
		return nil, err
	}
	to := a.temporal.adminTimeout
	if to <= 0 {
		to = time.Minute
	}
	return &tclient{Client: c, cfg: t, adminTimeout: to, regions: &a.regions, user: user}, nil
}

// dialRegion connects to Temporal and checks that central knows region; the caller closes the
// client.
func (a *App) dialRegion(ctx context.Context, region string) (*tclient, error) {
	c, err := a.dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.checkRegion(ctx, region); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// uiURL is where the Temporal UI shows workflow id: the UI of 'tms dev' listens on port 8233
// of the frontend's host.
func (c *tclient) uiURL(id string) string {
	host, _, err := net.SplitHostPort(c.cfg.Address)
	if err != nil || host == "" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, "8233") + "/namespaces/" + url.PathEscape(c.cfg.Namespace) + "/workflows/" + url.PathEscape(id)
}

// The listings and inventory changes are Workflow Updates on the long-lived service workflows
// of central and of each region (workflows/service.go): an admin's reads leave no workflow
// behind in the Temporal UI, where people look for tasks, and a region is still reached only
// through its task queue.

// centralAdmin asks central's service workflow for a listing ("images" or "regions").
func (c *tclient) centralAdmin(ctx context.Context, op string) (workflows.CentralAdminResult, error) {
	return c.centralAdminIn(ctx, workflows.CentralAdminInput{Op: op})
}

// centralAdminIn runs a CentralAdmin request and waits for it.
func (c *tclient) centralAdminIn(ctx context.Context, in workflows.CentralAdminInput) (workflows.CentralAdminResult, error) {
	var res workflows.CentralAdminResult
	op := in.Op
	err := c.update(ctx, workflows.CentralServiceID, workflows.UpdateRead, in, &res, "central", "is tms central running?")
	if err != nil {
		return res, fmt.Errorf("cannot ask central for its %s: %w", op, err)
	}
	return res, nil
}

// checkRegion makes sure central knows region: a workflow or activity on the queue of a region
// nobody serves would wait forever.
func (c *tclient) checkRegion(ctx context.Context, region string) error {
	_, err := c.regionInfo(ctx, region)
	return err
}

// regionAdmin sends one request to region's service workflow after checking the region exists:
// a "read" update for a listing, a "change" update for an inventory change.
func (c *tclient) regionAdmin(ctx context.Context, region string, in activities.AdminInput) (activities.AdminResult, error) {
	var res activities.AdminResult
	if err := c.checkRegion(ctx, region); err != nil {
		return res, err
	}
	name := workflows.UpdateChange
	if activities.ReadOp(in.Op) {
		name = workflows.UpdateRead
	}
	err := c.update(ctx, workflows.RegionServiceID(region), name, in, &res, "region "+region+"'s worker",
		"is `tms region` running for it?")
	return res, err
}

// update sends a Workflow Update to a service workflow and waits for its result, at most the
// admin timeout. who and hint make the errors an admin reads when nobody answers.
func (c *tclient) update(ctx context.Context, id, name string, in, out any, who, hint string) error {
	ctx, cancel := context.WithTimeout(ctx, c.adminTimeout)
	defer cancel()
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: id, UpdateName: name, Args: []any{in},
		WaitForStage: client.WorkflowUpdateStageCompleted})
	if err == nil {
		err = h.Get(ctx, out)
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil || isTimeout(err) || isDeadline(err):
		return fmt.Errorf("%s did not answer within %s: %s", who, roundDuration(c.adminTimeout), hint)
	}
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return fmt.Errorf("%s is not running (no workflow %s): %s", who, id, hint)
	}
	var pd *serviceerror.PermissionDenied
	if errors.As(err, &pd) {
		return err // the command line says which rule refused it
	}
	return errors.New(rootMessage(err))
}

// isDeadline tells whether err is a gRPC deadline or cancellation the client's own context
// caused.
func isDeadline(err error) bool {
	var de *serviceerror.DeadlineExceeded
	var ce *serviceerror.Canceled
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &de) || errors.As(err, &ce)
}

func isTimeout(err error) bool {
	var te *temporal.TimeoutError
	return errors.As(err, &te)
}

// rootMessage is the message an admin should read from a workflow's error: the first
// application error's own message ("region region-a has no terminal pc9"), not the layers of
// workflow and activity context Temporal wraps around it.
func rootMessage(err error) string {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) {
		return ae.Message()
	}
	var ce *temporal.CanceledError
	if errors.As(err, &ce) {
		return "canceled"
	}
	var te *temporal.TimeoutError
	if errors.As(err, &te) {
		return "timed out (" + strings.ToLower(strings.TrimPrefix(te.TimeoutType().String(), "TIMEOUT_TYPE_")) + ")"
	}
	var term *temporal.TerminatedError
	if errors.As(err, &term) {
		return "terminated"
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// notFound turns Temporal's "not found" for workflow id into words; other errors pass.
func notFound(err error, id string) error {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return fmt.Errorf("no task %s ('tms task ls --all' lists them)", id)
	}
	return err
}

// requireFlag is the usage error for a missing flag.
func requireFlag(cmd *cobra.Command, name, value string) error {
	if value == "" {
		return usageError{fmt.Errorf("%s: --%s is required", cmd.CommandPath(), name)}
	}
	return nil
}

func regionFlag(c *cobra.Command, region *string) {
	c.Flags().StringVar(region, "region", "", "region id (required; 'tms region ls' lists them)")
}

// roundDuration prints a duration as people write it: 1m, not 1m0s.
func roundDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// notInCatalogError is an image central's catalog does not have.
type notInCatalogError struct{ image string }

func (e *notInCatalogError) Error() string {
	return fmt.Sprintf("image %s is not in central's catalog ('tms image ls' lists it)", e.image)
}

// centralVersion resolves image (NAME, NAME:TAG or NAME@VERSION) in central's catalog, as
// NAME@VERSION; an image the catalog lacks is an error saying so. A region's store keeps
// versions, not central's tags, so commands that name an image in a region resolve it here.
func (c *tclient) centralVersion(ctx context.Context, image string) (string, error) {
	ref, err := parseRef(image)
	if err != nil {
		return "", err
	}
	res, err := c.centralAdmin(ctx, "images")
	if err != nil {
		return "", err
	}
	var match []string
	for _, im := range res.Images {
		if im.Name != ref.Name {
			continue
		}
		if ref.Version != "" && strings.HasPrefix(im.Version, ref.Version) || ref.Version == "" && slices.Contains(im.Tags, ref.Tag) {
			match = append(match, im.Version)
		}
	}
	switch len(match) {
	case 0:
		return "", &notInCatalogError{image}
	case 1:
		return ref.Name + "@" + match[0], nil
	}
	return "", fmt.Errorf("image %s names %d versions in central's catalog: give more of the version", image, len(match))
}
