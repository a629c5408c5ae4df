package devtemporal

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdktemporal "go.temporal.io/sdk/temporal"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/log"
	_ "go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql" // Temporal's PostgreSQL store
	"go.temporal.io/server/tools/common/schema"
	sqltool "go.temporal.io/server/tools/sql"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Postgres is a PostgreSQL server holding the embedded server's state. Its two databases must
// exist with Temporal's schema (CreateDatabases, or tms-temporal sql-tool as docs/deploy.md
// makes them); the namespaces and tms's search attributes are registered once the server runs.
type Postgres struct {
	// Addr is the server's host:port; User and Password log in.
	Addr, User, Password string
	// Database and VisibilityDatabase are the databases of workflows and of their listing.
	Database, VisibilityDatabase string
	// Shards is the number of history shards (default 4), fixed when the database is first used.
	Shards int32
	// MaxConns bounds the connections to each database (default 20).
	MaxConns int
}

func (p *Postgres) sql(db string) *config.SQL {
	conns := p.MaxConns
	if conns <= 0 {
		conns = 20
	}
	return &config.SQL{PluginName: "postgres12", DatabaseName: db, ConnectAddr: p.Addr, ConnectProtocol: "tcp",
		User: p.User, Password: p.Password, MaxConns: conns, MaxIdleConns: conns, MaxConnLifetime: time.Hour}
}

func (p *Postgres) persistence() config.Persistence {
	shards := p.Shards
	if shards <= 0 {
		shards = 4
	}
	return config.Persistence{DefaultStore: "default", VisibilityStore: "visibility", NumHistoryShards: shards,
		DataStores: map[string]config.DataStore{"default": {SQL: p.sql(p.Database)}, "visibility": {SQL: p.sql(p.VisibilityDatabase)}}}
}

// CreateDatabases creates the two databases and Temporal's schema in them, as tms-temporal
// sql-tool's create, setup-schema and update-schema do (docs/deploy.md); User must be allowed
// to create databases. Databases that exist keep what they hold (their schema is brought up to
// date).
func (p *Postgres) CreateDatabases() error {
	logger := log.NewNoopLogger()
	for _, d := range []struct{ db, schema string }{{p.Database, "postgresql/v12/temporal"}, {p.VisibilityDatabase, "postgresql/v12/visibility"}} {
		if err := sqltool.DoCreateDatabase(p.sql(d.db), "postgres", logger); err != nil {
			return fmt.Errorf("temporal: create database %s: %w", d.db, err)
		}
		conn, err := sqltool.NewConnection(p.sql(d.db), logger)
		if err != nil {
			return fmt.Errorf("temporal: connect to database %s: %w", d.db, err)
		}
		err = schema.NewSetupSchemaTask(conn, &schema.SetupConfig{InitialVersion: "0.0"}, logger).Run()
		if err == nil {
			err = schema.NewUpdateSchemaTask(conn, &schema.UpdateConfig{DBName: d.db, SchemaName: d.schema}, logger).Run()
		}
		conn.Close()
		if err != nil {
			return fmt.Errorf("temporal: schema %s in database %s: %w", d.schema, d.db, err)
		}
	}
	return nil
}

// registerNamespaces registers the namespaces, each with the search attributes, through the
// frontend at addr, trying for up to a minute while the server comes up; a namespace or an
// attribute already there is kept. added says whether it registered anything.
func registerNamespaces(addr string, namespaces []string, attrs []sdktemporal.SearchAttributeKey) (added bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(client.Options{HostPort: addr})
	if err != nil {
		return false, fmt.Errorf("temporal: dial %s: %w", addr, err)
	}
	defer c.Close()
	// retry calls f until it succeeds or the minute is over: the server may still be coming up.
	retry := func(what string, f func() error) error {
		for {
			err := f()
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("temporal: %s: %w", what, err)
			}
			time.Sleep(time.Second)
		}
	}
	for _, ns := range namespaces {
		err := retry("register namespace "+ns, func() error {
			_, err := c.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
				Namespace: ns, WorkflowExecutionRetentionPeriod: durationpb.New(72 * time.Hour)})
			var exists *serviceerror.NamespaceAlreadyExists
			if errors.As(err, &exists) {
				return nil
			}
			added = added || err == nil
			return err
		})
		if err != nil {
			return added, err
		}
		err = retry("search attributes of namespace "+ns, func() error {
			have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
			if err != nil {
				return err
			}
			missing := map[string]enumspb.IndexedValueType{}
			for _, k := range attrs {
				if _, ok := have.GetCustomAttributes()[k.GetName()]; !ok {
					missing[k.GetName()] = k.GetValueType()
				}
			}
			if len(missing) == 0 {
				return nil
			}
			_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{Namespace: ns, SearchAttributes: missing})
			added = added || err == nil
			return err
		})
		if err != nil {
			return added, err
		}
	}
	return added, nil
}
