package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"tms/store"
)

func TestUsers(t *testing.T) { forEachBackend(t, testUsers) }

func testUsers(t *testing.T) {
	ctx := context.Background()
	c, err := OpenCatalog(ctx, testDB(t, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	if err := c.AddUser(ctx, User{Name: "admin", Role: "admin", PasswordHash: "h1"}, now); err != nil {
		t.Fatal(err)
	}
	if err := c.AddUser(ctx, User{Name: "alice", Role: "operator", Regions: []string{"region-a"}, PasswordHash: "h2"}, now); err != nil {
		t.Fatal(err)
	}
	if err := c.AddUser(ctx, User{Name: "alice", Role: "viewer", PasswordHash: "h3"}, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("a second alice: %v", err)
	}
	u, err := c.User(ctx, "alice")
	if err != nil || u.Role != "operator" || len(u.Regions) != 1 || u.Regions[0] != "region-a" || u.PasswordHash != "h2" || !u.Created.Equal(now) {
		t.Fatalf("alice: %+v %v", u, err)
	}
	if _, err := c.User(ctx, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob: %v", err)
	}
	if err := c.SetPassword(ctx, "alice", "h4", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if u, _ := c.User(ctx, "alice"); u.PasswordHash != "h4" || !u.Updated.Equal(now.Add(time.Hour)) {
		t.Fatalf("after passwd: %+v", u)
	}
	if err := c.SetPassword(ctx, "bob", "h", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob's passwd: %v", err)
	}
	if err := c.RemoveUser(ctx, "admin", "admin"); !errors.Is(err, ErrConflict) {
		t.Fatalf("removing the last admin: %v", err)
	}
	if err := c.RemoveUser(ctx, "alice", "admin"); err != nil {
		t.Fatal(err)
	}
	us, err := c.Users(ctx)
	if err != nil || len(us) != 1 || us[0].Name != "admin" {
		t.Fatalf("users: %+v %v", us, err)
	}
}
