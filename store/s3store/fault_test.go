package s3store

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"tms/internal/miniotest"
	"tms/store"
)

// Faults between the backend and a real MinIO: a proxy that damages requests or replies.

// proxy serves srv's S3 API on a new address, passing each request through rewrite and each
// reply through modify, if not nil.
func proxy(t *testing.T, srv *miniotest.Server, rewrite func(*http.Request), modify func(*http.Response) error) string {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: srv.Endpoint}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the client signed the host it sent to
			if rewrite != nil {
				rewrite(pr.Out)
			}
		},
		ModifyResponse: modify,
		ErrorLog:       log.New(io.Discard, "", 0),
	}
	ts := httptest.NewServer(p)
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// flipper inverts the byte at offset at of the stream it reads.
type flipper struct {
	r       io.ReadCloser
	at, off int64
	flipped *atomic.Int64
}

func (f *flipper) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0xff
		f.flipped.Add(1)
	}
	f.off += int64(n)
	return n, err
}

func (f *flipper) Close() error { return f.r.Close() }

// cutter ends its stream with an error after n bytes.
type cutter struct {
	r io.ReadCloser
	n int64
}

func (c *cutter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func (c *cutter) Close() error { return c.r.Close() }

func TestUploadDamagedOnTheWayIsRejected(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	direct := open(t, config(srv, bucket, "p"))
	var damage atomic.Bool
	var flipped, withoutMD5 atomic.Int64
	cfg := config(srv, bucket, "p")
	cfg.Endpoint = proxy(t, srv, func(r *http.Request) {
		// Over HTTPS minio-go signs no payload: Content-MD5 is what lets the server check it.
		if r.Method == http.MethodPut && r.Header.Get("Content-Md5") == "" {
			withoutMD5.Add(1)
		}
		if damage.Load() && r.Method == http.MethodPut && r.ContentLength > 0 {
			r.Body = &flipper{r: r.Body, at: r.ContentLength / 2, flipped: &flipped}
		}
	}, nil)
	b := open(t, cfg)
	ctx := t.Context()
	data := randomBytes(1 << 20)

	// Through the proxy, undamaged: the proxy itself is not the trouble.
	if err := b.Put(ctx, "chunks/ok", data); err != nil {
		t.Fatalf("Put through a clean proxy: %v", err)
	}
	damage.Store(true)
	err := b.Put(ctx, "chunks/damaged", data)
	if flipped.Load() == 0 {
		t.Fatal("the proxy damaged nothing")
	}
	if err == nil {
		t.Fatal("Put of a body damaged on the way succeeded")
	}
	wantKind(t, err, store.ErrUnavailable)
	t.Logf("damaged Put: %v", err)
	if n := withoutMD5.Load(); n > 0 {
		t.Errorf("%d PUTs without Content-MD5", n)
	}
	if _, err := direct.Get(ctx, "chunks/damaged"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after a rejected Put, Get = %v; want ErrNotFound", err)
	}
}

func TestDownloadCutShortIsAnError(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	direct := open(t, config(srv, bucket, "p"))
	ctx := t.Context()
	data := randomBytes(1 << 20)
	if err := direct.Put(ctx, "chunks/x", data); err != nil {
		t.Fatal(err)
	}
	var cut atomic.Bool
	cfg := config(srv, bucket, "p")
	cfg.Endpoint = proxy(t, srv, nil, func(r *http.Response) error {
		if cut.Load() && r.Request.Method == http.MethodGet && r.StatusCode == http.StatusOK && r.ContentLength > 0 {
			r.Body = &cutter{r: r.Body, n: r.ContentLength / 2}
		}
		return nil
	})
	b := open(t, cfg)
	if got, err := b.Get(ctx, "chunks/x"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get through a clean proxy = %d bytes, %v", len(got), err)
	}
	cut.Store(true)
	got, err := b.Get(ctx, "chunks/x")
	if err == nil {
		t.Fatalf("Get of a body cut short gave %d bytes and no error", len(got))
	}
	wantKind(t, err, store.ErrUnavailable)
}

func TestBareNotFound(t *testing.T) {
	// AWS answers HEAD with a bare 404 for a missing object and for a missing bucket alike;
	// MinIO adds headers that tell them apart. Without them, a missing bucket must still not
	// look like a missing object.
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	cfg := config(srv, bucket, "p")
	cfg.Endpoint = proxy(t, srv, nil, func(r *http.Response) error {
		r.Header.Del("X-Minio-Error-Code")
		r.Header.Del("X-Minio-Error-Desc")
		return nil
	})
	b := open(t, cfg)
	b.bucketProof = 0 // check the bucket on every bare 404
	ctx := t.Context()
	_, err := b.Stat(ctx, "chunks/missing")
	wantKind(t, err, store.ErrNotFound)

	if err := srv.Client(t).RemoveBucket(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	_, err = b.Stat(ctx, "chunks/missing")
	wantKind(t, err, store.ErrUnavailable)
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat in a removed bucket = %v, want ErrUnavailable only", err)
	}
}
