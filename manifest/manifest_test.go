package manifest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func sample(t testing.TB) *Manifest {
	t.Helper()
	m := &Manifest{
		Format:    Format,
		Hash:      BLAKE3,
		DiskSize:  3<<20 + 5,
		ChunkSize: 1 << 20,
		Meta: Meta{
			Name:    "win11-lab",
			Created: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
			Source:  "file:/srv/win11.raw",
			Partitions: &PartitionTable{Scheme: "gpt", Partitions: []Partition{
				{Index: 1, Start: 1 << 20, Size: 100 << 20, Type: "EFI System", Name: "<efi> & \"boot\""},
			}},
		},
	}
	m.Chunks = make([]ID, 4)
	m.Chunks[0] = BLAKE3.Sum([]byte("a"))
	m.Chunks[2] = BLAKE3.Sum([]byte("b"))
	m.Chunks[3] = BLAKE3.Sum([]byte("a"))
	return m
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	m := sample(t)
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`\u003c`)) {
		t.Errorf("HTML escaping in canonical form: %s", b)
	}
	m2, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Encode(m2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("re-encoding differs:\n%s\n%s", b, b2)
	}
	if VersionID(m.Hash, b) != VersionID(m2.Hash, b2) {
		t.Fatal("version id changed across a round trip")
	}
	if !m2.Chunks[1].IsZero() || m2.Chunks[0] != m.Chunks[0] {
		t.Fatal("chunk ids lost in the round trip")
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := Encode(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	s := string(good)
	cases := map[string]struct {
		in   string
		want string
	}{
		"empty":             {"", "EOF"},
		"not json":          {"hello", "invalid character"},
		"trailing newline":  {s + "\n", "canonical"},
		"reordered fields":  {strings.Replace(s, `"format":"tms.image.v1","hash":"blake3"`, `"hash":"blake3","format":"tms.image.v1"`, 1), "canonical"},
		"unknown field":     {strings.Replace(s, `"format"`, `"extra":1,"format"`, 1), "unknown field"},
		"trailing data":     {s + "{}", "trailing"},
		"wrong format":      {strings.Replace(s, Format, "tms.image.v9", 1), "format"},
		"unknown hash":      {strings.Replace(s, `"blake3"`, `"md5"`, 1), "hash"},
		"chunk size":        {strings.Replace(s, `"chunk_size":1048576`, `"chunk_size":1048575`, 1), "chunk size"},
		"too few chunks":    {strings.Replace(s, `,""`, ``, 1), "chunk ids"},
		"bad chunk id":      {strings.Replace(s, `,""`, `,"zz"`, 1), "id"},
		"upper hex":         {strings.Replace(s, m0(t), strings.ToUpper(m0(t)), 1), "hex"},
		"bad name":          {strings.Replace(s, `"win11-lab"`, `"../etc"`, 1), "name"},
		"non-utc created":   {strings.Replace(s, `2026-11-23T10:00:00Z`, `2026-11-23T11:00:00+01:00`, 1), "UTC"},
		"fractional create": {strings.Replace(s, `2026-11-23T10:00:00Z`, `2026-11-23T10:00:00.5Z`, 1), "seconds"},
		"negative size":     {strings.Replace(s, `"disk_size":3145733`, `"disk_size":-1`, 1), "disk size"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(c.in))
			if err == nil {
				t.Fatalf("accepted %q", c.in)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func m0(t *testing.T) string { return BLAKE3.Sum([]byte("a")).String() }

func TestParseRef(t *testing.T) {
	cases := []struct {
		in      string
		want    Ref
		wantErr string
	}{
		{in: "win11", want: Ref{Name: "win11", Tag: "latest"}},
		{in: "win11:exam", want: Ref{Name: "win11", Tag: "exam", Explicit: true}},
		{in: "Ubuntu_24.04:v2-1", want: Ref{Name: "Ubuntu_24.04", Tag: "v2-1", Explicit: true}},
		{in: "win11@abcdef12", want: Ref{Name: "win11", Version: "abcdef12", Explicit: true}},
		{in: "", wantErr: "empty"},
		{in: ":tag", wantErr: "image name is empty"},
		{in: "win11:", wantErr: "tag is empty"},
		{in: "win11@abc", wantErr: "too short"},
		{in: "win11@ABCDEF12", wantErr: "hex"},
		{in: "win11@" + strings.Repeat("a", 65), wantErr: "longer"},
		{in: "../x", wantErr: "start with"},
		{in: "a/b", wantErr: "not allowed"},
		{in: "a:b:c", wantErr: "not allowed"},
		{in: "a:b@c", wantErr: "not allowed"},
		{in: ".hidden", wantErr: "start with"},
		{in: strings.Repeat("a", 129), wantErr: "longer than 128"},
		{in: "a\x00b", wantErr: "not allowed"},
	}
	for _, c := range cases {
		got, err := ParseRef(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseRef(%q) = %v, %v; want error containing %q", c.in, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestParseIDRejectsZeroAndJunk(t *testing.T) {
	for _, s := range []string{"", strings.Repeat("0", 64), strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		if _, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) accepted", s)
		}
	}
}

func FuzzDecode(f *testing.F) {
	good, err := Encode(sample(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":"tms.image.v1","hash":"sha256","disk_size":1,"chunk_size":65536,"parent":"","meta":{"name":"a","created":"2026-01-01T00:00:00Z"},"chunks":[""]}`))
	small := canonicalWithChunks(f, 3*MinChunkSize, 3)
	f.Add(small)
	f.Add(zeroIDs(small, 3))
	f.Add(zeroIDs(small, 4))
	f.Add(canonicalWithChunks(f, MinChunkSize, 3)) // more ids than its disk has
	f.Add(canonicalWithChunks(f, 3*MinChunkSize, 2))
	f.Add(bytes.Replace(small, []byte(`"format"`), []byte(`"chunks":[],"format"`), 1))
	f.Add(bytes.Replace(good, []byte(`,"chunks":[`), []byte(`,"chunks":[,`), 1))
	f.Add([]byte(`,"chunks":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if int64(len(b)) > MaxEncodedSizeFor(m.DiskSize) {
			t.Fatalf("accepted %d bytes for a disk of %d, over MaxEncodedSizeFor", len(b), m.DiskSize)
		}
		if _, err := DecodeForDisk(b, m.DiskSize); err != nil {
			t.Fatalf("DecodeForDisk refuses a manifest for its own disk size: %v", err)
		}
		if _, err := DecodeForDisk(b, m.DiskSize-1); err == nil {
			t.Fatalf("DecodeForDisk accepts a manifest for a disk smaller than it describes")
		}
		// Whatever Decode accepts is canonical: it encodes back to exactly the input.
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("accepted manifest does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted non-canonical input:\n%q\n%q", b, again)
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"win11", "win11:exam", "win11@abcdef", "a:b:c", "../../x", "a@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(r.Name+r.Tag, "/\\\x00:@") || strings.HasPrefix(r.Name, ".") {
			t.Fatalf("ParseRef(%q) let a path-unsafe name through: %+v", s, r)
		}
		back, err := ParseRef(r.String())
		if err != nil {
			t.Fatalf("String() of a parsed ref does not parse: %q: %v", r.String(), err)
		}
		back.Explicit, r.Explicit = false, false
		if back != r {
			t.Fatalf("round trip changed %+v into %+v", r, back)
		}
	})
}

// Ids must never change with the implementation: they name chunks in every store.
func TestHashKnownAnswers(t *testing.T) {
	for h, want := range map[Hash]string{
		BLAKE3: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
		SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	} {
		if got := h.Sum(nil).String(); got != want {
			t.Errorf("%s of nothing = %s, want %s", h, got, want)
		}
	}
}
