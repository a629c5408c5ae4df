package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"tms/config"
)

func ExampleLoad() {
	dir, err := os.MkdirTemp("", "config-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "region.yaml")
	err = os.WriteFile(file, []byte(`
store:
  s3:
    endpoint: http://minio.school.lan:9000
region:
  id: room-12
  data_dir: /var/lib/tms/region
  endpoint: http://room-12.school.lan:8081
  central_public_key: /etc/tms/central.pub
  temporal:
    tls:
      ca_file: /etc/tms/temporal-ca.pem
  labels:
    site: north
`), 0o600)
	if err != nil {
		panic(err)
	}

	fs := pflag.NewFlagSet("tms-region", pflag.ContinueOnError)
	fs.String("log-level", "", "debug, info, warn or error")
	if err := fs.Parse([]string{"--log-level=debug"}); err != nil {
		panic(err)
	}
	environ := map[string]string{
		"TMS_REGION_TEMPORAL_ADDRESS": "temporal.school.lan:7233",
		"AWS_ACCESS_KEY_ID":           "AKIAEXAMPLE",
		"AWS_SECRET_ACCESS_KEY":       "wJalrXUtnFEMI",
	}
	cfg, err := config.Load(config.LoadOptions{
		File:  file,
		Flags: fs,
		Env: func(name string) (string, bool) {
			v, ok := environ[name]
			return v, ok
		},
		Role: config.RoleRegion,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(cfg.Log.SlogLevel(), cfg.Region.ID, cfg.Region.Labels, cfg.Region.Temporal.Address, cfg.Region.Listen)
	fmt.Println(cfg.Store.S3)

	// Every problem at once, each naming its key.
	cfg.Region.ID = "Lab 1"
	cfg.Region.DataDir = ""
	err = cfg.Validate(config.RoleRegion)
	fmt.Println(err)
	var fe *config.FieldError
	fmt.Println(errors.As(err, &fe), fe.Key)
	// Output:
	// DEBUG room-12 map[site:north] temporal.school.lan:7233 [::]:8081
	// {Endpoint:minio.school.lan:9000 AccessKey:[redacted] SecretKey:[redacted] SessionToken: Region: Insecure:true}
	// config: region.id: "Lab 1" is not a valid region id (lowercase letters, digits and '-', at most 63)
	// config: region.data_dir: is required
	// true region.id
}
