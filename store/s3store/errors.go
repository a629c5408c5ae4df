package s3store

import (
	"context"
	"errors"
	"fmt"

	"github.com/minio/minio-go/v7"

	"tms/store"
)

// code returns the S3 error code of err ("NoSuchKey", "AccessDenied", …), or "" if err is not
// an answer from the server (a network error, say).
func code(err error) string {
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

// classify turns an error from minio-go about what (an object key, "bucket") into a store error.
// Only NoSuchKey means the object is not there; anything else kept the server from answering.
// A cancelled or expired ctx comes back as ctx.Err(), as is.
func (b *Backend) classify(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var r minio.ErrorResponse
	if !errors.As(err, &r) || r.Code == "" {
		return b.err(store.ErrUnavailable, what, fmt.Errorf("cannot reach %s: %w", b.endpoint, err))
	}
	switch r.Code {
	case minio.NoSuchKey:
		return b.err(store.ErrNotFound, what, nil)
	case minio.NoSuchBucket:
		return b.err(store.ErrUnavailable, what, b.noBucket())
	// The secret key is never shown, only the id that goes with it.
	case minio.InvalidAccessKeyID:
		return b.err(store.ErrUnavailable, what, fmt.Errorf("%s refused the credentials: it does not know access key id %q: %w", b.endpoint, b.accessKey, err))
	case minio.SignatureDoesNotMatch:
		return b.err(store.ErrUnavailable, what, fmt.Errorf("%s refused the credentials of access key id %q: the secret key is wrong, or the request was altered on the way: %w", b.endpoint, b.accessKey, err))
	case minio.AccessDenied:
		return b.err(store.ErrUnavailable, what, fmt.Errorf("access denied to access key id %q on bucket %q at %s (the store needs to list the bucket and to get, put and delete objects under its prefix): %w", b.accessKey, b.bucket, b.endpoint, err))
	}
	if r.StatusCode >= 500 {
		return b.err(store.ErrUnavailable, what, fmt.Errorf("%s failed with %d %s: %w", b.endpoint, r.StatusCode, r.Code, err))
	}
	return b.err(store.ErrUnavailable, what, fmt.Errorf("%s: %s: %w", b.endpoint, r.Code, err))
}

func (b *Backend) noBucket() error {
	return fmt.Errorf("bucket %q does not exist at %s; create it first", b.bucket, b.endpoint)
}
