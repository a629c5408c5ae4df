package state

import (
	"strconv"
	"strings"
)

// dialect is the SQL a database speaks. The queries in this package are written once, in
// SQLite's words with a few PostgreSQL ones both can be given; the dialect rewrites each query
// once, when it is first run, for the database at hand (see docs/state.md):
//
//	SQLite                        PostgreSQL
//	?                             $1, $2, …
//	INSERT OR IGNORE INTO … (…)   INSERT INTO … ON CONFLICT DO NOTHING
//	max(a, b), min(a, b)          GREATEST(a, b), LEAST(a, b)
//	(… FOR UPDATE dropped)        SELECT … FOR UPDATE
//
// and, in migrations, the column types: INTEGER → BIGINT (times are Unix nanoseconds), BLOB →
// BYTEA. A migration that does more than that (triggers, SQLite's table rebuilds) has a
// PostgreSQL text of its own.
type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

// query rewrites a query written for SQLite (with optional FOR UPDATE) for d.
func (d dialect) query(q string) string {
	if d == dialectSQLite {
		return stripForUpdate(q)
	}
	toks := tokenize(q)
	var b strings.Builder
	n, ignore := 0, false
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tokOther && t.text == "?":
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		case t.kind == tokWord && strings.EqualFold(t.text, "OR") && i >= 2 && strings.EqualFold(prevWord(toks, i), "INSERT"):
			// INSERT OR IGNORE: drop "OR IGNORE", add ON CONFLICT DO NOTHING at the end.
			if j := nextWord(toks, i); j > 0 && strings.EqualFold(toks[j].text, "IGNORE") {
				ignore = true
				i = j
				// skip the space after IGNORE
				if i+1 < len(toks) && toks[i+1].kind == tokSpace {
					i++
				}
				continue
			}
		case t.kind == tokWord && (strings.EqualFold(t.text, "max") || strings.EqualFold(t.text, "min")) &&
			i+1 < len(toks) && toks[i+1].text == "(" && twoArgs(toks, i+1):
			if strings.EqualFold(t.text, "max") {
				b.WriteString("GREATEST")
			} else {
				b.WriteString("LEAST")
			}
			continue
		}
		b.WriteString(t.text)
	}
	out := b.String()
	if ignore {
		out = strings.TrimRight(out, " \t\n;") + " ON CONFLICT DO NOTHING"
	}
	return out
}

// schema rewrites a migration's SQLite text for d: column types only.
func (d dialect) schema(q string) string {
	if d == dialectSQLite {
		return q
	}
	var b strings.Builder
	for _, t := range tokenize(q) {
		switch {
		case t.kind == tokWord && strings.EqualFold(t.text, "INTEGER"):
			b.WriteString("BIGINT")
		case t.kind == tokWord && strings.EqualFold(t.text, "BLOB"):
			b.WriteString("BYTEA")
		default:
			b.WriteString(t.text)
		}
	}
	return b.String()
}

// stripForUpdate drops a trailing FOR UPDATE: SQLite has no row locks (one connection writes
// at a time), and a transaction there already sees no other writer.
func stripForUpdate(q string) string {
	t := strings.TrimRight(q, " \t\n")
	if len(t) >= len("FOR UPDATE") && strings.EqualFold(t[len(t)-len("FOR UPDATE"):], "FOR UPDATE") {
		return strings.TrimRight(t[:len(t)-len("FOR UPDATE")], " \t\n")
	}
	return q
}

type tokKind int

const (
	tokOther   tokKind = iota // punctuation, numbers, operators: one byte each
	tokWord                   // identifier or keyword
	tokSpace                  // white space
	tokString                 // '…' or "…", quotes kept
	tokComment                // -- … to the end of the line
)

type token struct {
	kind tokKind
	text string
}

// tokenize splits SQL into tokens whose texts, joined, are q again. A ? inside a string or a
// comment is not a placeholder, and a word inside one is not rewritten.
func tokenize(q string) []token {
	var out []token
	for i := 0; i < len(q); {
		c := q[i]
		j := i + 1
		kind := tokOther
		switch {
		case c == '\'' || c == '"':
			kind = tokString
			for j < len(q) {
				if q[j] == c {
					if j+1 < len(q) && q[j+1] == c { // doubled quote inside
						j += 2
						continue
					}
					j++
					break
				}
				j++
			}
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			kind = tokComment
			for j < len(q) && q[j] != '\n' {
				j++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			kind = tokSpace
			for j < len(q) && (q[j] == ' ' || q[j] == '\t' || q[j] == '\n' || q[j] == '\r') {
				j++
			}
		case isWordByte(c):
			kind = tokWord
			for j < len(q) && isWordByte(q[j]) {
				j++
			}
		}
		out = append(out, token{kind, q[i:j]})
		i = j
	}
	return out
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func prevWord(toks []token, i int) string {
	for j := i - 1; j >= 0; j-- {
		if toks[j].kind == tokWord {
			return toks[j].text
		}
		if toks[j].kind != tokSpace {
			return ""
		}
	}
	return ""
}

func nextWord(toks []token, i int) int {
	for j := i + 1; j < len(toks); j++ {
		if toks[j].kind == tokWord {
			return j
		}
		if toks[j].kind != tokSpace {
			return -1
		}
	}
	return -1
}

// twoArgs reports whether the parenthesis at toks[open] encloses a list of more than one
// argument (a comma at its own level): max(a, b) is GREATEST, max(a) stays an aggregate.
func twoArgs(toks []token, open int) bool {
	depth := 0
	for j := open; j < len(toks); j++ {
		switch toks[j].text {
		case "(":
			depth++
		case ")":
			depth--
			if depth == 0 {
				return false
			}
		case ",":
			if depth == 1 {
				return true
			}
		}
	}
	return false
}
