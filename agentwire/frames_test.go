package agentwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"tms/manifest"
)

func frameIDs() []manifest.ID {
	return []manifest.ID{manifest.BLAKE3.Sum([]byte("a")), manifest.BLAKE3.Sum([]byte("b")), manifest.BLAKE3.Sum([]byte("a"))}
}

func framesAnswer(ids []manifest.ID, frames ...string) []byte {
	var b []byte
	for i, id := range ids {
		b = AppendBatch(b, id, []byte(frames[i]))
	}
	return b
}

func readAll(body io.Reader, ids []manifest.ID) ([]string, error) {
	var got []string
	err := ReadFrames(body, ids, func(n int) []byte { return make([]byte, n) }, func(i int, frame []byte) error {
		if i != len(got) {
			return errors.New("records out of order")
		}
		got = append(got, string(frame))
		return nil
	})
	return got, err
}

func TestReadFramesTakesExactlyTheRecordsAskedFor(t *testing.T) {
	ids := frameIDs()
	good := framesAnswer(ids, "one", "two", "three")
	got, err := readAll(bytes.NewReader(good), ids)
	if err != nil || len(got) != 3 || got[0] != "one" || got[1] != "two" || got[2] != "three" {
		t.Fatalf("read %q, %v", got, err)
	}
	huge := append(append([]byte{}, ids[0][:]...), binary.BigEndian.AppendUint32(nil, MaxFrame+1)...)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"another id", framesAnswer([]manifest.ID{ids[1], ids[1], ids[2]}, "x", "y", "z")},
		{"records reordered", framesAnswer([]manifest.ID{ids[1], ids[0], ids[2]}, "x", "y", "z")},
		{"cut in a header", good[:manifest.IDLen+4+3+10]},
		{"cut in a frame", good[:len(good)-2]},
		{"a record missing", framesAnswer(ids[:2], "one", "two")},
		{"empty", nil},
		{"bytes after the last", append(append([]byte{}, good...), 0)},
		{"a record too many", append(append([]byte{}, good...), AppendBatch(nil, ids[0], []byte("more"))...)},
		{"an empty frame", framesAnswer(ids, "one", "", "three")},
		{"a frame over the limit", huge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := readAll(bytes.NewReader(tc.body), ids); !errors.Is(err, ErrFrames) {
				t.Fatalf("got %v, want ErrFrames", err)
			}
		})
	}
}

func TestReadFramesPassesReadErrorsOn(t *testing.T) {
	ids := frameIDs()
	boom := errors.New("connection reset")
	body := io.MultiReader(bytes.NewReader(framesAnswer(ids[:1], "one")), &failReader{boom})
	if _, err := readAll(body, ids); !errors.Is(err, boom) || errors.Is(err, ErrFrames) {
		t.Fatalf("got %v, want the read error as is", err)
	}
}

type failReader struct{ err error }

func (r *failReader) Read([]byte) (int, error) { return 0, r.err }

// FuzzReadFrames feeds arbitrary answers to the parser an agent runs on every frames answer of
// its region: it must return an error or exactly the records asked for, within the limits,
// never panic or ask for a buffer over MaxFrame.
func FuzzReadFrames(f *testing.F) {
	ids := frameIDs()
	f.Add(framesAnswer(ids, "one", "two", "three"))
	f.Add([]byte{})
	f.Add(framesAnswer(ids[:2], "one", "two"))
	f.Add(append(framesAnswer(ids, "one", "two", "three"), 1, 2, 3))
	f.Add(append(append([]byte{}, ids[0][:]...), 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, total := 0, 0
		err := ReadFrames(bytes.NewReader(b), ids, func(size int) []byte {
			if size <= 0 || size > MaxFrame {
				t.Fatalf("asked for a buffer of %d bytes", size)
			}
			return make([]byte, size)
		}, func(i int, frame []byte) error {
			if i != n || len(frame) == 0 {
				t.Fatalf("record %d (frame of %d bytes) as record %d", n, len(frame), i)
			}
			n++
			total += manifest.IDLen + 4 + len(frame)
			return nil
		})
		if err == nil && (n != len(ids) || total != len(b)) {
			t.Fatalf("accepted %d records of %d bytes from an answer of %d bytes", n, total, len(b))
		}
	})
}
