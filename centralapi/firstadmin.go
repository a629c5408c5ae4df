package centralapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"tms/auth"
	"tms/internal/atomicfile"
	"tms/state"
	"tms/store"
)

// FirstAdminName is the admin tms dev starts with.
const FirstAdminName = "admin"

// FirstAdmin makes sure user "admin" exists (tms dev). The first time, it generates a password,
// keeps it in file (mode 0600) and creates the user; later it returns what file holds ("" when
// it is gone), and created is false. A changed password (tms user passwd admin) is not written
// back: file then holds the first one.
func FirstAdmin(ctx context.Context, users Users, file string, now time.Time) (password string, created bool, err error) {
	_, err = users.User(ctx, FirstAdminName)
	if err == nil {
		b, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		return strings.TrimSpace(string(b)), false, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return "", false, err
	}
	password = auth.NewPassword()
	hash, err := auth.HashPassword(password)
	if err != nil {
		return "", false, err
	}
	if err := atomicfile.Write(file, strings.NewReader(password+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("admin password file: %w", err)
	}
	if err := users.AddUser(ctx, state.User{Name: FirstAdminName, Role: string(auth.RoleAdmin), PasswordHash: hash}, now); err != nil {
		return "", false, err
	}
	return password, true, nil
}
