package choose

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"
)

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}
}

var (
	roomA  = Server{ID: "srv-a", Labels: map[string]string{"room": "a", "rack": "1"}}
	roomA2 = Server{ID: "srv-a2", Labels: map[string]string{"room": "a", "rack": "2"}}
	roomB  = Server{ID: "srv-b", Labels: map[string]string{"room": "b"}}
	bare   = Server{ID: "srv-x"}
)

func TestChosen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		labels  map[string]string
		servers []Server
		want    []string // the chosen one is one of these
	}{
		{"the one server whose labels match", map[string]string{"room": "b"}, []Server{roomA, roomB, bare}, []string{"srv-b"}},
		{"a match on every label is needed", map[string]string{"room": "a", "rack": "2"}, []Server{roomA, roomA2, roomB}, []string{"srv-a2"}},
		{"partial labels match several servers", map[string]string{"room": "a"}, []Server{roomA, roomA2, roomB}, []string{"srv-a", "srv-a2"}},
		{"none match: any healthy server", map[string]string{"room": "z"}, []Server{roomA, roomB}, []string{"srv-a", "srv-b"}},
		{"no labels: any healthy server", nil, []Server{roomA, roomB, bare}, []string{"srv-a", "srv-b", "srv-x"}},
		{"the matching one stale (absent): another", map[string]string{"room": "b"}, []Server{roomA, bare}, []string{"srv-a", "srv-x"}},
		{"no server", map[string]string{"room": "a"}, nil, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 50 {
				got := Chosen(mac(i), tc.labels, tc.servers)
				if !slices.Contains(tc.want, got) {
					t.Fatalf("Chosen(%s) = %q, want one of %q", mac(i), got, tc.want)
				}
				order := Order(mac(i), tc.labels, tc.servers)
				if len(order) != len(tc.servers) || (len(order) > 0 && order[0] != got) {
					t.Fatalf("Order(%s) = %q, want all %d servers, %q first", mac(i), order, len(tc.servers), got)
				}
			}
		})
	}
}

func TestOrderIsStableAndTheNextTakesOverAStaleOne(t *testing.T) {
	all := []Server{roomA, roomA2, roomB, bare}
	for i := range 200 {
		m := mac(i)
		order := Order(m, map[string]string{"room": "a"}, all)
		// The matching servers first.
		if !slices.Contains([]string{"srv-a", "srv-a2"}, order[0]) || !slices.Contains([]string{"srv-a", "srv-a2"}, order[1]) {
			t.Fatalf("Order(%s) = %q: the room-a servers must come first", m, order)
		}
		// The same whatever order the servers are listed in.
		rev := slices.Clone(all)
		slices.Reverse(rev)
		if again := Order(m, map[string]string{"room": "a"}, rev); !slices.Equal(again, order) {
			t.Fatalf("Order(%s) = %q, then %q with the servers listed backwards", m, order, again)
		}
		// The first gone, the rest keep their order: the second is chosen.
		var rest []Server
		for _, s := range all {
			if s.ID != order[0] {
				rest = append(rest, s)
			}
		}
		if got := Order(m, map[string]string{"room": "a"}, rest); !slices.Equal(got, order[1:]) {
			t.Fatalf("without %s: %q, want %q", order[0], got, order[1:])
		}
		// A server that is not chosen going away changes nothing for this terminal.
		var fewer []Server
		for _, s := range all {
			if s.ID != order[len(order)-1] {
				fewer = append(fewer, s)
			}
		}
		if got := Chosen(m, map[string]string{"room": "a"}, fewer); got != order[0] {
			t.Fatalf("without the last (%s): %q chosen, want %q still", order[len(order)-1], got, order[0])
		}
	}
}

func TestChoiceSpreadsTerminals(t *testing.T) {
	for _, servers := range [][]Server{{roomA, roomB}, {roomA, roomB, bare}} {
		t.Run(fmt.Sprint(len(servers)), func(t *testing.T) {
			const n = 3000
			count := map[string]int{}
			for i := range n {
				count[Chosen(mac(i), nil, servers)]++
			}
			fair := n / len(servers)
			for _, s := range servers {
				// Within a fifth of a fair share: sha256 spreads far better than that.
				if c := count[s.ID]; c < fair*4/5 || c > fair*6/5 {
					t.Errorf("%s answers %d of %d terminals, want about %d (%v)", s.ID, c, n, fair, count)
				}
			}
		})
	}
}

func TestViewAnswersOnlyForItsTerminals(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	a, b := NewView("srv-a", time.Minute), NewView("srv-b", time.Minute)
	for _, v := range []*View{a, b} {
		v.now = func() time.Time { return now }
		if !v.Answer(mac(1)) {
			t.Fatalf("%s before any picture: silent, want it to answer", v.self)
		}
	}
	labels := map[string]map[string]string{mac(1).String(): {"room": "b"}, mac(2).String(): {"room": "a"}}
	for _, v := range []*View{a, b} {
		v.Update([]Server{roomA, roomB}, labels)
	}
	if a.Answer(mac(1)) || !b.Answer(mac(1)) {
		t.Errorf("a room-b terminal: srv-a answers %v (want false), srv-b %v (want true)", a.Answer(mac(1)), b.Answer(mac(1)))
	}
	if !a.Answer(mac(2)) || b.Answer(mac(2)) {
		t.Errorf("a room-a terminal: srv-a answers %v (want true), srv-b %v (want false)", a.Answer(mac(2)), b.Answer(mac(2)))
	}
	// Exactly one answers each terminal, labelled or not.
	for i := range 100 {
		if a.Answer(mac(i)) == b.Answer(mac(i)) {
			t.Fatalf("%s: srv-a answers %v, srv-b %v; want exactly one", mac(i), a.Answer(mac(i)), b.Answer(mac(i)))
		}
	}
	// srv-b stale: srv-a answers its terminals too.
	a.Update([]Server{roomA}, labels)
	if !a.Answer(mac(1)) {
		t.Error("srv-a alone: silent to a room-b terminal, want it to answer")
	}
	// A picture older than staleView answers everything.
	b.Update([]Server{roomA, roomB}, labels)
	now = now.Add(2 * time.Minute)
	if !b.Answer(mac(2)) {
		t.Error("an old picture: srv-b silent, want it to answer")
	}
	// A server that does not see itself healthy answers.
	c := NewView("srv-c", 0)
	c.Update([]Server{roomA, roomB}, labels)
	if !c.Answer(mac(2)) {
		t.Error("srv-c, absent from its own picture: silent, want it to answer")
	}
}

func FuzzChoose(f *testing.F) {
	f.Add([]byte{0x52, 0x54, 0, 0, 0, 1}, "room", "a", "srv-a", "room=a", "srv-b", "room=b")
	f.Add([]byte{}, "", "", "", "", "", "")
	f.Add([]byte{1, 2, 3}, "k", "", "x", "k=", "x", "k=")
	f.Fuzz(func(t *testing.T, hw []byte, key, value, id1, labels1, id2, labels2 string) {
		parse := func(s string) map[string]string {
			m := map[string]string{}
			for i := 0; i+1 < len(s); i += 2 {
				m[s[i:i+1]] = s[i+1 : i+2]
			}
			return m
		}
		servers := []Server{{ID: id1, Labels: parse(labels1)}, {ID: id2, Labels: parse(labels2)}}
		want := map[string]string{key: value}
		m := net.HardwareAddr(hw)
		order := Order(m, want, servers)
		chosen := Chosen(m, want, servers)
		if len(order) == 0 || order[0] != chosen {
			t.Fatalf("Order = %q, Chosen = %q: they must agree", order, chosen)
		}
		// A matching server, if any, is chosen.
		anyMatch := Matches(servers[0].Labels, want) || Matches(servers[1].Labels, want)
		for _, s := range servers {
			if s.ID == chosen && anyMatch && !Matches(s.Labels, want) && !(servers[0].ID == servers[1].ID) {
				t.Fatalf("%q chosen without matching %v while another server matches", chosen, want)
			}
		}
		// Both servers' views agree on who answers.
		va, vb := NewView(id1, 0), NewView(id2, 0)
		labels := map[string]map[string]string{m.String(): want}
		va.Update(servers, labels)
		vb.Update(servers, labels)
		if id1 != id2 && va.Answer(m) == vb.Answer(m) {
			t.Fatalf("%s: %q answers %v, %q answers %v; want exactly one", m, id1, va.Answer(m), id2, vb.Answer(m))
		}
	})
}
