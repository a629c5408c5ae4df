package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// User is a person who may use tms, as central's catalog keeps them. Package auth says what
// the role and regions allow and checks the password hash; the catalog only keeps them.
type User struct {
	Name    string
	Role    string
	Regions []string
	// PasswordHash is the argon2id hash (auth.HashPassword), never the password.
	PasswordHash string
	Created      time.Time
	Updated      time.Time
}

// AddUser records a new user; a name that is taken is ErrConflict.
func (c *Catalog) AddUser(ctx context.Context, u User, now time.Time) error {
	if u.Name == "" || u.Role == "" || u.PasswordHash == "" {
		return invalid(errors.New("a user needs a name, a role and a password"))
	}
	regions, _ := json.Marshal(nonNil(u.Regions))
	_, err := c.db.ExecContext(ctx, `INSERT INTO users (name, role, regions, password_hash, created, updated) VALUES (?, ?, ?, ?, ?, ?)`,
		u.Name, u.Role, string(regions), u.PasswordHash, now.UTC().UnixNano(), now.UTC().UnixNano())
	if isUnique(err) {
		return conflict(fmt.Errorf("user %s exists already", u.Name))
	}
	return err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	var regions string
	var created, updated int64
	if err := row.Scan(&u.Name, &u.Role, &regions, &u.PasswordHash, &created, &updated); err != nil {
		return u, err
	}
	if err := json.Unmarshal([]byte(regions), &u.Regions); err != nil {
		return u, fmt.Errorf("user %s: regions: %w", u.Name, err)
	}
	u.Created, u.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return u, nil
}

const userColumns = `name, role, regions, password_hash, created, updated`

// User returns the user called name (ErrNotFound if none).
func (c *Catalog) User(ctx context.Context, name string) (User, error) {
	u, err := scanUser(c.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return u, notFound("user " + name)
	}
	return u, err
}

// Users lists every user by name.
func (c *Catalog) Users(ctx context.Context) ([]User, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var us []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		us = append(us, u)
	}
	return us, rows.Err()
}

// RemoveUser removes a user (ErrNotFound if none). The last admin is not removed (ErrConflict):
// nobody could add users again.
func (c *Catalog) RemoveUser(ctx context.Context, name, adminRole string) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "users"); err != nil {
		return err
	}
	var role string
	if err := tx.QueryRowContext(ctx, `SELECT role FROM users WHERE name = ?`, name).Scan(&role); errors.Is(err, sql.ErrNoRows) {
		return notFound("user " + name)
	} else if err != nil {
		return err
	}
	if role == adminRole {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE role = ?`, adminRole).Scan(&n); err != nil {
			return err
		}
		if n <= 1 {
			return conflict(fmt.Errorf("user %s is the last admin: add another admin first", name))
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name); err != nil {
		return err
	}
	return tx.Commit()
}

// SetPassword replaces a user's password hash (ErrNotFound if no such user).
func (c *Catalog) SetPassword(ctx context.Context, name, hash string, now time.Time) error {
	res, err := c.db.ExecContext(ctx, `UPDATE users SET password_hash = ?, updated = ? WHERE name = ?`, hash, now.UTC().UnixNano(), name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("user " + name)
	}
	return nil
}
