package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"tms/internal/pgtest"
)

// Several tms region servers of one region share one PostgreSQL inventory. These tests open
// the same database twice (two *sql.DB pools, as two processes would) and race them.

// openShared opens one PostgreSQL inventory n times.
func openShared(t *testing.T, n int) []*Inventory {
	t.Helper()
	dsn := pgtest.DSN(t)
	var invs []*Inventory
	for range n {
		inv, err := OpenInventory(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inv.Close() })
		invs = append(invs, inv)
	}
	return invs
}

// raceCount is how many goroutines each server races with.
const raceCount = 16

// Machines on several addresses claim one terminal's boot through two servers at once: exactly
// one claim wins; every other is a rival naming the winner's address.
func TestClaimBootIsExactlyOnceAcrossServers(t *testing.T) {
	ctx := context.Background()
	invs := openShared(t, 2)
	now := time.Now()
	const mac = "aa:bb:cc:00:00:01"
	for round := range 5 {
		task := fmt.Sprintf("deploy/r/pc-01/win11/run%d", round)
		if round == 0 {
			if err := invs[0].Enroll(ctx, mac, "pc-01"); err != nil {
				t.Fatal(err)
			}
		}
		if err := invs[0].SetBootAction(ctx, mac, BootAction{Action: "deploy", Task: task, Image: "win11", Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		type result struct {
			ip, token string
			err       error
		}
		results := make(chan result, 2*raceCount)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for s, inv := range invs {
			for g := range raceCount {
				ip := fmt.Sprintf("10.0.%d.%d", s, g+1)
				wg.Go(func() {
					<-start
					tok, _, err := inv.ClaimBoot(ctx, mac, task, ip, true, now)
					results <- result{ip, tok, err}
				})
			}
		}
		close(start)
		wg.Wait()
		close(results)
		var winners []result
		var rivals []*RivalError
		for r := range results {
			var re *RivalError
			switch {
			case r.err == nil:
				winners = append(winners, r)
			case errors.As(r.err, &re):
				rivals = append(rivals, re)
			default:
				t.Errorf("round %d: claim from %s: %v", round, r.ip, r.err)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d claims won, want exactly 1: %+v", round, len(winners), winners)
		}
		if len(rivals) != 2*raceCount-1 {
			t.Errorf("round %d: %d rivals, want %d", round, len(rivals), 2*raceCount-1)
		}
		for _, re := range rivals {
			if re.First != winners[0].ip {
				t.Errorf("round %d: a rival names %s as first, the winner was %s", round, re.First, winners[0].ip)
			}
		}
		// The winner's token works through either server, from its address only.
		for _, inv := range invs {
			if _, ok, err := inv.CheckClaim(ctx, mac, task, winners[0].token, winners[0].ip, now); !ok || err != nil {
				t.Errorf("round %d: the winner's token: %v, %v", round, ok, err)
			}
		}
	}
}

// Agents' reports finish one task through two servers at once: the first ending wins, once.
func TestFinishTaskIsExactlyOnceAcrossServers(t *testing.T) {
	ctx := context.Background()
	invs := openShared(t, 2)
	now := time.Now()
	const mac = "aa:bb:cc:00:00:01"
	if err := invs[0].Enroll(ctx, mac, "pc-01"); err != nil {
		t.Fatal(err)
	}
	task := Task{ID: "deploy/r/pc-01/win11/run1", MAC: mac, Kind: "deploy", Version: "v1"}
	if _, err := invs[0].StartTask(ctx, task, now); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var changed []TaskState
	var wg sync.WaitGroup
	for s, inv := range invs {
		for g := range raceCount {
			state := TaskDone
			if (s+g)%2 == 1 {
				state = TaskFailed
			}
			wg.Go(func() {
				_, c, err := inv.FinishTask(ctx, task.ID, state, "", "", now)
				if err != nil {
					t.Error(err)
				}
				if c {
					mu.Lock()
					changed = append(changed, state)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(changed) != 1 {
		t.Fatalf("%d endings changed the task, want exactly 1", len(changed))
	}
	got, err := invs[1].Task(ctx, task.ID)
	if err != nil || got.State != changed[0] {
		t.Errorf("task after the race: %+v, %v; the winning ending was %s", got, err, changed[0])
	}
}

// Servers starting at once against one new database migrate it once between them.
func TestServersMigratingAtOnce(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	errs := make(chan error, 6)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			inv, err := OpenInventory(ctx, dsn)
			if err == nil {
				err = inv.Enroll(ctx, "aa:bb:cc:00:00:01", "pc-01")
				inv.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	inv, err := OpenInventory(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	var n, distinct int
	if err := inv.db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if want := len(inventoryMigrations); n != want || distinct != want {
		t.Errorf("schema_migrations has %d rows, %d versions; want %d of each", n, distinct, want)
	}
}

// Two servers move one terminal to different groups at once, many times: it always ends in
// exactly one group.
func TestMoveTerminalsAcrossServersLeavesOneGroup(t *testing.T) {
	ctx := context.Background()
	invs := openShared(t, 2)
	const mac = "aa:bb:cc:00:00:01"
	if err := invs[0].Enroll(ctx, mac, "pc-01"); err != nil {
		t.Fatal(err)
	}
	groups := []string{"room-a", "room-b", "room-c", "room-d"}
	for _, g := range groups {
		if err := invs[0].CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 20 {
		var wg sync.WaitGroup
		for i, g := range groups {
			inv := invs[i%2]
			wg.Go(func() {
				if err := inv.MoveTerminals(ctx, g, "pc-01"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		var n int
		if err := invs[1].db.QueryRow(`SELECT COUNT(*) FROM group_members WHERE mac = ?`, mac).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("round %d: the terminal is in %d groups after concurrent moves, want 1", round, n)
		}
	}
}
