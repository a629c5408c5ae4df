// Package s3store is a store.Backend on S3 or an S3-compatible server (MinIO, Ceph RGW,
// Garage), built on minio-go.
//
// New checks the bucket before it returns, so a wrong key, a missing bucket or a server that
// cannot be reached shows up when the store is opened, as an error of kind store.ErrUnavailable
// that says which. Every object of the store lives under one prefix of one bucket.
//
//	bucket, prefix, err := s3store.ParseLocation("s3://images/lab1")
//	if err != nil { … }
//	b, err := s3store.New(ctx, s3store.Config{
//		Endpoint: "minio.school.example:9000", Secure: true,
//		AccessKey: id, SecretKey: secret,
//		Bucket: bucket, Prefix: prefix,
//	})
//	if err != nil { … }
//	s := store.New(b, store.Options{})
//
// The credentials need s3:ListBucket on the bucket and s3:GetObject, s3:PutObject and
// s3:DeleteObject on the objects under the prefix.
package s3store

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"tms/store"
)

// Timing of requests.
const (
	// OpenTimeout bounds the checks New makes.
	OpenTimeout = 15 * time.Second
	// DialTimeout bounds connecting to the server.
	DialTimeout = 10 * time.Second
	// ResponseHeaderTimeout bounds the wait for a reply once a request has been sent, a
	// whole object included.
	ResponseHeaderTimeout = 30 * time.Second
	// MaxConnsIdle is how many idle connections to the server are kept for reuse: callers
	// run many requests in parallel.
	MaxConnsIdle = 64

	// bucketProof is how long a successful request counts as proof that the bucket exists.
	// See Stat.
	bucketProof = 5 * time.Second
	// maxSinglePut is the largest object S3 takes in one PUT; larger ones go in parts.
	maxSinglePut = 5 << 30
)

// Config says where a store is and how to log in.
type Config struct {
	// Endpoint is the server's HOST or HOST:PORT, without a scheme:
	// "s3.eu-central-1.amazonaws.com", "minio.school.example:9000".
	Endpoint string
	// Secure selects HTTPS.
	Secure bool
	// AccessKey and SecretKey are the credentials; SessionToken is for temporary ones. An
	// empty AccessKey makes anonymous requests.
	AccessKey, SecretKey, SessionToken string
	// Region is the bucket's region. If empty, New asks the server.
	Region string
	// Bucket holds the store (see ValidateBucket); Prefix is the key prefix under which the
	// store keeps its objects, without leading or trailing slash, "" for the whole bucket (see
	// ValidatePrefix). ParseLocation gives both from s3://BUCKET/PREFIX.
	Bucket, Prefix string
}

// Backend is a store.Backend on an S3 bucket. It is safe for concurrent use.
type Backend struct {
	client    *minio.Client
	bucket    string
	keyPrefix string // "" or the prefix with a slash at the end
	name      string // s3://bucket/prefix
	endpoint  string
	accessKey string
	// bucketSeen is when a request last showed the bucket to exist, in Unix nanoseconds; for
	// bucketProof after that, Stat takes a bare 404 to mean a missing object.
	bucketSeen  atomic.Int64
	bucketProof time.Duration
}

var (
	_ store.Backend       = (*Backend)(nil)
	_ store.LimitedGetter = (*Backend)(nil)
)

// New opens the store that cfg describes. It checks, within OpenTimeout, that the server answers,
// accepts the credentials and holds the bucket, and that the credentials may list it: each of
// these failing gives a *store.Error of kind store.ErrUnavailable saying which. A missing bucket
// is ErrUnavailable, never ErrNotFound: the store could not be asked.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	if err := ValidateBucket(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	if err := ValidatePrefix(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	b := &Backend{
		bucket:    cfg.Bucket,
		name:      "s3://" + cfg.Bucket,
		endpoint:  cfg.Endpoint,
		accessKey: cfg.AccessKey,

		bucketProof: bucketProof,
	}
	if cfg.Prefix != "" {
		b.keyPrefix = cfg.Prefix + "/"
		b.name += "/" + cfg.Prefix
	}
	tr := newTransport(cfg.Secure)
	opts := func(region string, retries int) *minio.Options {
		return &minio.Options{
			Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
			Secure:     cfg.Secure,
			Transport:  tr,
			Region:     region,
			MaxRetries: retries,
		}
	}

	// The checks retry little: a server that refuses connections should be reported now.
	probe, err := minio.New(cfg.Endpoint, opts(cfg.Region, 3))
	if err != nil {
		return nil, b.err(store.ErrUnavailable, "endpoint", fmt.Errorf("%s: %w", cfg.Endpoint, err))
	}
	pctx, cancel := context.WithTimeout(ctx, OpenTimeout)
	defer cancel()
	region := cfg.Region
	if region == "" {
		region, err = probe.GetBucketLocation(pctx, cfg.Bucket)
		if err != nil {
			return nil, b.openErr(ctx, pctx, err)
		}
	}
	// List one key: this proves the bucket exists and that we may list it, which the store
	// needs for tags, locks and garbage collection.
	if err := b.listOne(pctx, probe); err != nil {
		return nil, b.openErr(ctx, pctx, err)
	}
	b.sawBucket()

	b.client, err = minio.New(cfg.Endpoint, opts(region, 0))
	if err != nil {
		return nil, b.err(store.ErrUnavailable, "endpoint", fmt.Errorf("%s: %w", cfg.Endpoint, err))
	}
	return b, nil
}

func (b *Backend) listOne(ctx context.Context, c *minio.Client) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	noOwner := false
	for o := range c.ListObjectsIter(lctx, b.bucket, minio.ListObjectsOptions{
		Prefix: b.keyPrefix, Recursive: true, MaxKeys: 1, FetchOwner: &noOwner,
	}) {
		return o.Err
	}
	// The iterator ends without an error when its context ends.
	return ctx.Err()
}

// openErr explains why New could not check the bucket.
func (b *Backend) openErr(ctx, pctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if pctx.Err() != nil {
		return b.err(store.ErrUnavailable, "bucket", fmt.Errorf("%s did not answer within %v: %w", b.endpoint, OpenTimeout, err))
	}
	return b.classify(ctx, "bucket", err)
}

func validateEndpoint(e string) error {
	switch {
	case e == "":
		return errors.New("s3 store: no endpoint: give the server as HOST or HOST:PORT")
	case strings.Contains(e, "://"):
		return fmt.Errorf("s3 store: endpoint %q: give HOST or HOST:PORT without a scheme (Secure selects https)", clip(e))
	case strings.ContainsAny(e, "/?#@ "):
		return fmt.Errorf("s3 store: endpoint %q: give HOST or HOST:PORT, nothing more", clip(e))
	}
	return nil
}

func newTransport(secure bool) *http.Transport {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   DialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          4 * MaxConnsIdle,
		MaxIdleConnsPerHost:   MaxConnsIdle,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// Objects are stored as they are; never let the transport decode a gzip body.
		DisableCompression: true,
	}
	if secure {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return tr
}

// String returns s3://BUCKET/PREFIX.
func (b *Backend) String() string { return b.name }

// Bucket returns the bucket the store is in.
func (b *Backend) Bucket() string { return b.bucket }

// ObjectName returns the name in the bucket of the object with key.
func (b *Backend) ObjectName(key string) string { return b.keyPrefix + key }

func (b *Backend) err(kind error, what string, cause error) error {
	return &store.Error{Kind: kind, Store: b.name, What: what, Err: cause}
}

// object checks key as Dir does, so both backends take the same keys, and returns its name in
// the bucket.
func (b *Backend) object(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || path.Clean(key) != key || strings.HasPrefix(key, "../") || key == ".." {
		return "", b.err(store.ErrUnavailable, key, errors.New("invalid object key"))
	}
	return b.keyPrefix + key, nil
}

func (b *Backend) sawBucket() { b.bucketSeen.Store(time.Now().UnixNano()) }

// Get returns the whole object. A body cut short gives ErrUnavailable, never short data.
func (b *Backend) Get(ctx context.Context, key string) ([]byte, error) { return b.get(ctx, key, -1) }

// GetLimited is Get for an object of at most limit bytes: a larger one is ErrCorrupt, refused
// from its Content-Length before its body is read.
func (b *Backend) GetLimited(ctx context.Context, key string, limit int64) ([]byte, error) {
	return b.get(ctx, key, limit)
}

// get reads an object of at most limit bytes (no bound when limit is negative).
func (b *Backend) get(ctx context.Context, key string, limit int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name, err := b.object(key)
	if err != nil {
		return nil, err
	}
	body, info, _, err := minio.Core{Client: b.client}.GetObject(ctx, b.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, b.classify(ctx, key, err)
	}
	defer body.Close()
	if limit >= 0 && info.Size > limit {
		return nil, store.TooLarge(b.name, key, info.Size, limit)
	}
	var data []byte
	switch {
	case info.Size >= 0:
		data = make([]byte, info.Size)
		_, err = io.ReadFull(body, data)
	case limit >= 0:
		data, err = io.ReadAll(io.LimitReader(body, limit+1))
	default:
		data, err = io.ReadAll(body)
	}
	if err != nil {
		return nil, b.classify(ctx, key, fmt.Errorf("reading %s (%d bytes) from %s: %w", key, info.Size, b.endpoint, err))
	}
	if limit >= 0 && int64(len(data)) > limit {
		return nil, store.TooLarge(b.name, key, int64(len(data)), limit)
	}
	b.sawBucket()
	return data, nil
}

// Put stores data in one PUT with its MD5 in Content-MD5, so that the server rejects an upload
// that does not arrive intact. A successful PUT is durable and replaces the object at once.
func (b *Backend) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name, err := b.object(key)
	if err != nil {
		return err
	}
	_, err = b.client.PutObject(ctx, b.bucket, name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:      "application/octet-stream",
		SendContentMd5:   true,
		DisableMultipart: len(data) <= maxSinglePut,
	})
	if err != nil {
		return b.classify(ctx, key, err)
	}
	b.sawBucket()
	return nil
}

// Stat returns the object's size and modification time.
//
// S3 answers a HEAD request without a body, and some servers (AWS among them) give the same bare
// 404 for a missing object and a missing bucket. Before reporting ErrNotFound, Stat makes sure the
// bucket is there, unless a request in the last few seconds has shown it: a missing bucket must
// not look like a missing object.
func (b *Backend) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return store.ObjectInfo{}, err
	}
	name, err := b.object(key)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	info, err := b.client.StatObject(ctx, b.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		if code(err) == minio.NoSuchKey {
			if err := b.checkBucket(ctx); err != nil {
				return store.ObjectInfo{}, err
			}
		}
		return store.ObjectInfo{}, b.classify(ctx, key, err)
	}
	b.sawBucket()
	return store.ObjectInfo{Key: key, Size: info.Size, ModTime: info.LastModified}, nil
}

// checkBucket makes sure the bucket exists, if no request has shown it recently.
func (b *Backend) checkBucket(ctx context.Context) error {
	if time.Since(time.Unix(0, b.bucketSeen.Load())) < b.bucketProof {
		return nil
	}
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return b.classify(ctx, "bucket", err)
	}
	if !ok {
		return b.err(store.ErrUnavailable, "bucket", b.noBucket())
	}
	b.sawBucket()
	return nil
}

// Delete removes the object; an object that is not there is not an error.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name, err := b.object(key)
	if err != nil {
		return err
	}
	err = b.client.RemoveObject(ctx, b.bucket, name, minio.RemoveObjectOptions{})
	if err != nil && code(err) != minio.NoSuchKey {
		return b.classify(ctx, key, err)
	}
	b.sawBucket()
	return nil
}

// List calls fn for every object whose key starts with prefix, with keys relative to the store's
// prefix. Zero-byte "folder" objects (keys ending in a slash, made by some consoles) are left out.
func (b *Backend) List(ctx context.Context, prefix string, fn func(store.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	noOwner := false
	want := b.keyPrefix + prefix
	for o := range b.client.ListObjectsIter(lctx, b.bucket, minio.ListObjectsOptions{
		Prefix: want, Recursive: true, FetchOwner: &noOwner,
	}) {
		if o.Err != nil {
			return b.classify(ctx, "list "+prefix, o.Err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !strings.HasPrefix(o.Key, want) || strings.HasSuffix(o.Key, "/") {
			continue
		}
		if err := fn(store.ObjectInfo{Key: o.Key[len(b.keyPrefix):], Size: o.Size, ModTime: o.LastModified}); err != nil {
			return err
		}
	}
	// The iterator ends without an error when its context ends.
	if err := ctx.Err(); err != nil {
		return err
	}
	b.sawBucket()
	return nil
}
