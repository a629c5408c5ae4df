package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"tms/auth"
	"tms/config"
	"tms/server"
	"tms/signing"
	"tms/state"
)

// centralKeyCommands are tms central init and tms central pubkey: central's signing key.
func (a *App) centralKeyCommands() []*cobra.Command {
	var keyFile, firstAdmin string
	var asJSON bool
	keyPath := func(cmd *cobra.Command) (string, error) {
		if keyFile != "" {
			return keyFile, nil
		}
		cfg, err := config.Load(config.LoadOptions{File: a.configFile, Env: a.Env, Role: config.RoleCLI})
		if err != nil {
			return "", err
		}
		if cfg.Central.SigningKeyFile == "" {
			return "", usageError{errors.New("give --key FILE or set central.signing_key_file")}
		}
		return cfg.Central.SigningKeyFile, nil
	}
	print := func(cmd *cobra.Command, k *signing.PrivateKey, path string, created bool) error {
		pub := k.Public()
		if asJSON {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(struct {
				PublicKey string `json:"public_key"`
				KeyID     string `json:"key_id"`
				File      string `json:"file"`
				Created   bool   `json:"created"`
			}{pub.String(), pub.ID(), path, created})
		}
		// The first line is the key; the second is a comment, so the output saved to a file is
		// a public key file regions and tms bootenv build read as is.
		what := "in"
		if created {
			what = "created in"
		}
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n# key id %s, central's key %s %s\n", pub, pub.ID(), what, path)
		return err
	}
	init := &cobra.Command{
		Use:   "init",
		Short: "Create central's signing key (if it has none) and print its public key",
		Long: `Create central's ed25519 signing key in --key FILE (default central.signing_key_file), mode 0600,
unless the file exists: an existing key is never replaced (a new key would orphan every signature
made with the old one), it is only read. Either way the public key is printed in its one-line text
form, tms-ed25519:<base64>, followed by a comment line with its key id (the first 8 bytes of the
SHA-256 of the public key, in hex). Give the public key to every region (region.central_public_key)
and to the boot environment (tms bootenv build --central-key).

--admin NAME also makes the first admin of a new site: if central's catalog (central.database,
else central.data_dir) has no user yet, it creates NAME with the role admin and a random password,
printed once on a line "first admin: NAME, password: …" (log in with tms login NAME, then change
it with tms user passwd NAME). A catalog that has users is left alone.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := keyPath(cmd)
			if err != nil {
				return err
			}
			k, err := signing.CreateKeyFile(path)
			created := err == nil
			if errors.Is(err, fs.ErrExist) {
				k, err = signing.LoadKeyFile(path)
			}
			if err != nil {
				return err
			}
			if err := print(cmd, k, path, created); err != nil {
				return err
			}
			if firstAdmin == "" {
				return nil
			}
			return a.makeFirstAdmin(cmd, firstAdmin)
		},
	}
	init.Flags().StringVar(&firstAdmin, "admin", "", "create this admin, with a random password printed once, if central's catalog has no user")
	pubkey := &cobra.Command{
		Use:   "pubkey",
		Short: "Print the public key of central's signing key",
		Long: `Print the public key of central's signing key (--key FILE, default central.signing_key_file) in its
one-line text form, tms-ed25519:<base64>, followed by a comment line with its key id.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := keyPath(cmd)
			if err != nil {
				return err
			}
			k, err := signing.LoadKeyFile(path)
			if err != nil {
				return err
			}
			return print(cmd, k, path, false)
		},
	}
	for _, c := range []*cobra.Command{init, pubkey} {
		c.Flags().StringVar(&keyFile, "key", "", "central's signing key file (default central.signing_key_file)")
		c.Flags().BoolVar(&asJSON, "json", false, "print JSON: public_key, key_id, file, created")
	}
	return []*cobra.Command{init, pubkey}
}

// makeFirstAdmin creates admin name in central's catalog if it has no user at all.
func (a *App) makeFirstAdmin(cmd *cobra.Command, name string) error {
	ctx := cmd.Context()
	cfg, err := config.Load(config.LoadOptions{File: a.configFile, Env: a.Env, Role: config.RoleCLI})
	if err != nil {
		return err
	}
	cat, err := openCatalog(ctx, cfg.Central, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer cat.Close()
	users, err := cat.Users(ctx)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "central's catalog has %d users already: no first admin made\n", len(users))
		return nil
	}
	password := auth.NewPassword()
	hash, err := auth.HashPassword(password)
	if err != nil {
		return err
	}
	if err := cat.AddUser(ctx, state.User{Name: name, Role: string(auth.RoleAdmin), PasswordHash: hash}, time.Now()); err != nil {
		return fmt.Errorf("first admin %s: %w", name, err)
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "first admin: %s, password: %s\n", name, password)
	return err
}

// openCatalog opens central's catalog where tms central keeps it: central.database, else
// catalog.db in central.data_dir.
func openCatalog(ctx context.Context, c config.Central, log *slog.Logger) (*state.Catalog, error) {
	if c.Database.Value() == "" {
		if c.DataDir == "" {
			return nil, usageError{errors.New("set central.database or central.data_dir: where central's catalog is")}
		}
		if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
			return nil, err
		}
	}
	return server.OpenCatalog(ctx, c.DataDir, c.Database.Value(), c.DatabaseConnectTimeout, log)
}
