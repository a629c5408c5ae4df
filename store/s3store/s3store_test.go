package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"tms/internal/miniotest"
	"tms/store"
)

// The tests of this package share one MinIO server, each in buckets of its own.
func TestMain(m *testing.M) {
	code := m.Run()
	miniotest.StopShared()
	os.Exit(code)
}

func config(srv *miniotest.Server, bucket, prefix string) Config {
	return Config{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: bucket, Prefix: prefix}
}

func open(t *testing.T, cfg Config) *Backend {
	t.Helper()
	b, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func putRaw(t *testing.T, c *minio.Client, bucket, name string, data []byte) {
	t.Helper()
	if _, err := c.PutObject(t.Context(), bucket, name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, name, err)
	}
}

func listKeys(t *testing.T, b *Backend, prefix string) []string {
	t.Helper()
	var keys []string
	if err := b.List(t.Context(), prefix, func(o store.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	sort.Strings(keys)
	return keys
}

func wantKind(t *testing.T, err, kind error) {
	t.Helper()
	if got := store.Kind(err); got != kind {
		t.Fatalf("error %v is of kind %v, want %v", err, got, kind)
	}
	var se *store.Error
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a *store.Error", err)
	}
}

func TestRoundTrip(t *testing.T) {
	srv := miniotest.Shared(t)
	for _, prefix := range []string{"", "school/lab1"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			ctx := t.Context()
			bucket := srv.NewBucket(t)
			raw := srv.Client(t)
			// Objects beside the store, some sharing the start of its prefix.
			outside := []string{"school/lab10/x", "school/lab1-old/x", "school/x", "lab1/x"}
			if prefix != "" {
				for _, k := range outside {
					putRaw(t, raw, bucket, k, []byte("not ours"))
				}
			}
			b := open(t, config(srv, bucket, prefix))
			wantName := "s3://" + bucket
			if prefix != "" {
				wantName += "/" + prefix
			}
			if b.String() != wantName {
				t.Errorf("String() = %q, want %q", b.String(), wantName)
			}

			objects := map[string][]byte{
				"tms-store.json":       []byte(`{"format":"tms.store.v1"}`),
				"chunks/ab/abcdef":     randomBytes(3 << 20),
				"chunks/cd/cdef01":     randomBytes(1),
				"refs/win11/latest":    []byte("91bc\n"),
				"locks/shared-1.json":  []byte("{}"),
				"manifests/91bc":       randomBytes(1000),
				"chunks/ab/abcdef-bak": randomBytes(10),
			}
			start := time.Now()
			for k, v := range objects {
				if err := b.Put(ctx, k, v); err != nil {
					t.Fatalf("Put(%q): %v", k, err)
				}
			}
			for k, v := range objects {
				got, err := b.Get(ctx, k)
				if err != nil || !bytes.Equal(got, v) {
					t.Fatalf("Get(%q) = %d bytes, %v; want the %d bytes put", k, len(got), err, len(v))
				}
				fi, err := b.Stat(ctx, k)
				if err != nil {
					t.Fatalf("Stat(%q): %v", k, err)
				}
				if fi.Key != k || fi.Size != int64(len(v)) {
					t.Fatalf("Stat(%q) = %+v, want key %q size %d", k, fi, k, len(v))
				}
				if d := fi.ModTime.Sub(start); d < -2*time.Second || d > time.Minute {
					t.Fatalf("Stat(%q).ModTime = %v, put at %v", k, fi.ModTime, start)
				}
				// The object is under the prefix in the bucket.
				if _, err := raw.StatObject(ctx, bucket, b.ObjectName(k), minio.StatObjectOptions{}); err != nil {
					t.Fatalf("object %q is not at %q in the bucket: %v", k, b.ObjectName(k), err)
				}
				if want := strings.TrimPrefix(prefix+"/"+k, "/"); b.ObjectName(k) != want {
					t.Fatalf("ObjectName(%q) = %q, want %q", k, b.ObjectName(k), want)
				}
			}

			var all []string
			for k := range objects {
				all = append(all, k)
			}
			sort.Strings(all)
			if got := listKeys(t, b, ""); !slices.Equal(got, all) {
				t.Fatalf("List(\"\") = %q, want %q", got, all)
			}
			if got, want := listKeys(t, b, "chunks/ab/"), []string{"chunks/ab/abcdef", "chunks/ab/abcdef-bak"}; !slices.Equal(got, want) {
				t.Fatalf("List(chunks/ab/) = %q, want %q", got, want)
			}
			if got, want := listKeys(t, b, "chunks/ab/abcdef-"), []string{"chunks/ab/abcdef-bak"}; !slices.Equal(got, want) {
				t.Fatalf("List(chunks/ab/abcdef-) = %q, want %q", got, want)
			}
			if got := listKeys(t, b, "nothing/"); len(got) != 0 {
				t.Fatalf("List(nothing/) = %q, want nothing", got)
			}
			var sized []store.ObjectInfo
			b.List(ctx, "chunks/cd/", func(o store.ObjectInfo) error { sized = append(sized, o); return nil })
			if len(sized) != 1 || sized[0].Size != 1 || sized[0].ModTime.IsZero() {
				t.Fatalf("List(chunks/cd/) = %+v, want one object of 1 byte with a time", sized)
			}

			// Put replaces.
			if err := b.Put(ctx, "refs/win11/latest", []byte("aaaa\n")); err != nil {
				t.Fatal(err)
			}
			if got, _ := b.Get(ctx, "refs/win11/latest"); string(got) != "aaaa\n" {
				t.Fatalf("after a second Put, Get = %q", got)
			}
			// An empty object is an object.
			if err := b.Put(ctx, "empty", nil); err != nil {
				t.Fatal(err)
			}
			if got, err := b.Get(ctx, "empty"); err != nil || len(got) != 0 {
				t.Fatalf("Get(empty) = %q, %v", got, err)
			}

			for k := range objects {
				if err := b.Delete(ctx, k); err != nil {
					t.Fatalf("Delete(%q): %v", k, err)
				}
				if _, err := b.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("Get(%q) after Delete: %v, want ErrNotFound", k, err)
				}
				if err := b.Delete(ctx, k); err != nil {
					t.Fatalf("second Delete(%q): %v", k, err)
				}
			}
			if got := listKeys(t, b, ""); !slices.Equal(got, []string{"empty"}) {
				t.Fatalf("List after deleting = %q, want [empty]", got)
			}
			// Nothing outside the prefix was touched.
			for _, k := range outside {
				if _, err := raw.StatObject(ctx, bucket, k, minio.StatObjectOptions{}); prefix != "" && err != nil {
					t.Fatalf("object %q outside the store: %v", k, err)
				}
			}
		})
	}
}

func TestListManyPages(t *testing.T) {
	// More than the 1000 keys of a page of S3 listing, put in parallel as imports do.
	srv := miniotest.Shared(t)
	b := open(t, config(srv, srv.NewBucket(t), "p"))
	const n = 1001
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("chunks/%02x/%05d", i%256, i))
	}
	sort.Strings(want)
	putMany(t, b, want)
	if got := listKeys(t, b, "chunks/"); !slices.Equal(got, want) {
		t.Fatalf("List gave %d keys, want %d", len(got), len(want))
	}

	// Cancelled at the last key of the first page: the listing must not end as if it were
	// complete.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	calls := 0
	err := b.List(ctx, "chunks/", func(store.ObjectInfo) error {
		if calls++; calls == 1000 {
			cancel()
		}
		return nil
	})
	if err != context.Canceled || calls != 1000 {
		t.Errorf("List cancelled on the way = %v after %d keys, want context.Canceled after 1000", err, calls)
	}
}

// putMany puts keys, each holding its own name, 32 at a time.
func putMany(t *testing.T, b *Backend, keys []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	ch := make(chan string)
	for range 32 {
		wg.Go(func() {
			for k := range ch {
				if err := b.Put(t.Context(), k, []byte(k)); err != nil {
					errs <- err
				}
			}
		})
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestListStopsOnCallbackError(t *testing.T) {
	srv := miniotest.Shared(t)
	b := open(t, config(srv, srv.NewBucket(t), ""))
	for i := range 5 {
		if err := b.Put(t.Context(), fmt.Sprintf("k/%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	stop := errors.New("enough")
	calls := 0
	err := b.List(t.Context(), "k/", func(store.ObjectInfo) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Fatalf("List = %v after %d calls; want the callback's error as is, after 1", err, calls)
	}
}

func TestMissingObject(t *testing.T) {
	srv := miniotest.Shared(t)
	b := open(t, config(srv, srv.NewBucket(t), "p"))
	ctx := t.Context()
	_, err := b.Get(ctx, "chunks/ab/missing")
	wantKind(t, err, store.ErrNotFound)
	if !strings.Contains(err.Error(), "chunks/ab/missing") || !strings.Contains(err.Error(), b.String()) {
		t.Errorf("Get error %q does not name the key and the store", err)
	}
	_, err = b.Stat(ctx, "chunks/ab/missing")
	wantKind(t, err, store.ErrNotFound)
	// Also when the bucket has to be checked (as on servers that answer HEAD with a bare 404).
	b.bucketProof = 0
	_, err = b.Stat(ctx, "chunks/ab/missing")
	wantKind(t, err, store.ErrNotFound)
}

func TestInvalidKeys(t *testing.T) {
	srv := miniotest.Shared(t)
	b := open(t, config(srv, srv.NewBucket(t), "p"))
	for _, k := range []string{"", "/abs", "a/../../x", "..", "a//b", "a/./b", "a/"} {
		if err := b.Put(t.Context(), k, []byte("x")); store.Kind(err) != store.ErrUnavailable {
			t.Errorf("Put(%q) = %v, want an invalid key error", k, err)
		}
		if _, err := b.Get(t.Context(), k); store.Kind(err) != store.ErrUnavailable {
			t.Errorf("Get(%q) = %v, want an invalid key error", k, err)
		}
	}
}

func TestWrongCredentials(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	for _, tc := range []struct {
		name              string
		access, secret    string
		mentions, notHave string
	}{
		{name: "wrong secret", access: srv.AccessKey, secret: "not-the-secret-key", mentions: srv.AccessKey},
		{name: "unknown access key", access: "nobody-here", secret: srv.SecretKey, mentions: "nobody-here", notHave: srv.SecretKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(srv, bucket, "p")
			cfg.AccessKey, cfg.SecretKey = tc.access, tc.secret
			b, err := New(t.Context(), cfg)
			if err == nil {
				t.Fatalf("New with %s = %v, want an error", tc.name, b)
			}
			wantKind(t, err, store.ErrUnavailable)
			if errors.Is(err, store.ErrNotFound) {
				t.Fatalf("error %v is ErrNotFound", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "refused the credentials") || !strings.Contains(msg, tc.mentions) {
				t.Errorf("error %q does not say the credentials of %q were refused", msg, tc.mentions)
			}
			if strings.Contains(msg, tc.secret) || strings.Contains(msg, srv.SecretKey) {
				t.Errorf("error %q shows a secret key", msg)
			}
		})
	}
}

func TestMissingBucket(t *testing.T) {
	srv := miniotest.Shared(t)
	for _, region := range []string{"", "us-east-1"} { // with and without asking for the region
		_, err := New(t.Context(), Config{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
			Region: region, Bucket: "no-such-bucket", Prefix: "p"})
		wantKind(t, err, store.ErrUnavailable)
		if errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a missing bucket gives ErrNotFound: %v", err)
		}
		if msg := err.Error(); !strings.Contains(msg, `bucket "no-such-bucket" does not exist`) {
			t.Errorf("error %q does not say the bucket does not exist", msg)
		}
	}
}

func TestBucketRemovedAfterOpen(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	b := open(t, config(srv, bucket, "p"))
	if err := srv.Client(t).RemoveBucket(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	b.bucketProof = 0
	ctx := t.Context()
	_, err := b.Get(ctx, "x")
	wantKind(t, err, store.ErrUnavailable)
	_, err = b.Stat(ctx, "x")
	wantKind(t, err, store.ErrUnavailable)
	err = b.List(ctx, "", func(store.ObjectInfo) error { return nil })
	wantKind(t, err, store.ErrUnavailable)
	err = b.Put(ctx, "x", []byte("x"))
	wantKind(t, err, store.ErrUnavailable)
	if !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Put error %q does not say the bucket is gone", err)
	}
}

func TestUnreachableEndpoint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err = New(t.Context(), Config{Endpoint: endpoint, AccessKey: "k", SecretKey: "secret-key", Bucket: "images"})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("New took %v to give up on a closed port", d)
	}
	wantKind(t, err, store.ErrUnavailable)
	if !strings.Contains(err.Error(), endpoint) {
		t.Errorf("error %q does not name the endpoint %s", err, endpoint)
	}
}

func TestSilentEndpointTimesOut(t *testing.T) {
	// A server that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err = New(ctx, Config{Endpoint: l.Addr().String(), AccessKey: "k", SecretKey: "secret-key", Bucket: "images"})
	if err != context.DeadlineExceeded {
		t.Fatalf("New past the caller's deadline = %v, want context.DeadlineExceeded as is", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("New took %v with a deadline of 1s", d)
	}
}

func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no endpoint", Config{Bucket: "images"}, "no endpoint"},
		{"scheme in endpoint", Config{Endpoint: "http://127.0.0.1:9000", Bucket: "images"}, "without a scheme"},
		{"path in endpoint", Config{Endpoint: "127.0.0.1:9000/images", Bucket: "images"}, "nothing more"},
		{"bad bucket", Config{Endpoint: "127.0.0.1:9000", Bucket: "Images"}, "lower case"},
		{"bad prefix", Config{Endpoint: "127.0.0.1:9000", Bucket: "images", Prefix: "/lab1"}, "slash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestCancelledContext(t *testing.T) {
	srv := miniotest.Shared(t)
	cfg := config(srv, srv.NewBucket(t), "p")
	b := open(t, cfg)
	if err := b.Put(t.Context(), "k/1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := New(ctx, cfg); err != context.Canceled {
		t.Errorf("New = %v, want context.Canceled", err)
	}
	if _, err := b.Get(ctx, "k/1"); err != context.Canceled {
		t.Errorf("Get = %v, want context.Canceled", err)
	}
	if _, err := b.Stat(ctx, "k/1"); err != context.Canceled {
		t.Errorf("Stat = %v, want context.Canceled", err)
	}
	if err := b.Put(ctx, "k/2", []byte("x")); err != context.Canceled {
		t.Errorf("Put = %v, want context.Canceled", err)
	}
	if err := b.Delete(ctx, "k/1"); err != context.Canceled {
		t.Errorf("Delete = %v, want context.Canceled", err)
	}
	if err := b.List(ctx, "", func(store.ObjectInfo) error { return nil }); err != context.Canceled {
		t.Errorf("List = %v, want context.Canceled", err)
	}

	// Cancelled while a request is under way.
	ctx, cancel = context.WithCancel(t.Context())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	var err error
	for err == nil {
		err = b.Put(ctx, "k/big", randomBytes(8<<20))
	}
	if err != context.Canceled {
		t.Errorf("Put cancelled on the way = %v, want context.Canceled", err)
	}
}
