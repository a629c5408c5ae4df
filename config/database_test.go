package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestValidateDatabase(t *testing.T) {
	for _, c := range []struct {
		name, db string
		timeout  time.Duration
		wantErr  string // in the message; "" for valid
	}{
		{name: "empty: SQLite in data_dir", db: ""},
		{name: "a file path", db: "/srv/tms/inventory.db"},
		{name: "sqlite: path", db: "sqlite:/srv/tms/inventory.db"},
		{name: "postgres URL", db: "postgres://tms:pw@db.lab:5432/tms?sslmode=require"},
		{name: "postgresql URL", db: "postgresql://db.lab/tms"},
		{name: "connect timeout in range", db: "postgres://db.lab/tms", timeout: 5 * time.Minute},
		{name: "sqlite: without a path", db: "sqlite:", wantErr: "names no file"},
		{name: "another scheme", db: "mysql://u:pw@db/tms", wantErr: "neither a file path nor a postgres:// URL"},
		{name: "no host", db: "postgres:///tms", wantErr: "has no host"},
		{name: "no database", db: "postgres://tms:pw@db.lab:5432", wantErr: "names no database"},
		{name: "connect timeout too short", db: "", timeout: 100 * time.Millisecond, wantErr: "not between 1s and 1h"},
		{name: "connect timeout too long", db: "", timeout: 2 * time.Hour, wantErr: "not between 1s and 1h"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, role := range []string{"central", "region"} {
				cfg := valid()
				if role == "central" {
					cfg.Central.Database, cfg.Central.DatabaseConnectTimeout = Database(c.db), c.timeout
				} else {
					cfg.Region.Database, cfg.Region.DatabaseConnectTimeout = Database(c.db), c.timeout
				}
				err := cfg.Validate(RoleRegion)
				if c.wantErr == "" {
					if err != nil {
						t.Errorf("%s: %v", role, err)
					}
					continue
				}
				var fe *FieldError
				if err == nil || !errors.As(err, &fe) || !strings.HasPrefix(fe.Key, role+".database") || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("%s: %v; want an error on %s.database… saying %q", role, err, role, c.wantErr)
				}
				if strings.Contains(fmt.Sprint(err), ":pw@") {
					t.Errorf("%s: the password shows in %v", role, err)
				}
			}
		})
	}
}

// A database URL's password shows nowhere the configuration is printed or logged.
func TestDatabasePasswordIsRedacted(t *testing.T) {
	cfg := valid()
	cfg.Region.Database = "postgres://tms:s3cret@db.lab/tms?sslmode=disable&password=s3cret2"
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("starting", "region", cfg.Region)
	js, _ := json.Marshal(cfg.Region)
	for _, s := range []string{fmt.Sprint(cfg.Region), fmt.Sprintf("%+v", cfg.Region), fmt.Sprintf("%#v", cfg.Region), string(js), logged.String(), cfg.Region.Database.String()} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("the password shows in %s", s)
		}
	}
	if !strings.Contains(cfg.Region.Database.String(), "db.lab") || cfg.Region.Database.Value() != "postgres://tms:s3cret@db.lab/tms?sslmode=disable&password=s3cret2" {
		t.Errorf("String %s, Value %s", cfg.Region.Database.String(), cfg.Region.Database.Value())
	}
}
