package s3store

import (
	"strings"
	"testing"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

func TestParseLocation(t *testing.T) {
	for _, tc := range []struct {
		name, in       string
		bucket, prefix string
		err            string // part of the error; "" for none
	}{
		{name: "bucket only", in: "s3://images", bucket: "images"},
		{name: "bucket with slash", in: "s3://images/", bucket: "images"},
		{name: "prefix", in: "s3://images/lab1", bucket: "images", prefix: "lab1"},
		{name: "deep prefix", in: "s3://images/school/lab-1/v2", bucket: "images", prefix: "school/lab-1/v2"},
		{name: "trailing slash dropped", in: "s3://images/lab1/", bucket: "images", prefix: "lab1"},
		{name: "scheme in capitals", in: "S3://images/lab1", bucket: "images", prefix: "lab1"},
		{name: "dots and digits", in: "s3://tms.lab-01.example/x", bucket: "tms.lab-01.example", prefix: "x"},
		{name: "shortest bucket", in: "s3://abc", bucket: "abc"},
		{name: "longest bucket", in: "s3://" + strings.Repeat("a", 63), bucket: strings.Repeat("a", 63)},
		{name: "prefix with spaces and unicode", in: "s3://images/Salle B/élèves", bucket: "images", prefix: "Salle B/élèves"},

		{name: "empty", in: "", err: "want s3://BUCKET"},
		{name: "other scheme", in: "https://images/lab1", err: "want s3://BUCKET"},
		{name: "no scheme", in: "images/lab1", err: "want s3://BUCKET"},
		{name: "no bucket", in: "s3://", err: "no bucket name"},
		{name: "no bucket before prefix", in: "s3:///lab1", err: "no bucket name"},
		{name: "bucket too short", in: "s3://ab", err: "3 to 63"},
		{name: "bucket too long", in: "s3://" + strings.Repeat("a", 64), err: "3 to 63"},
		{name: "upper case bucket", in: "s3://Images", err: "lower case"},
		{name: "underscore", in: "s3://my_images", err: `'_' is not allowed`},
		{name: "port in bucket", in: "s3://host:9000/images", err: `':' is not allowed`},
		{name: "starts with hyphen", in: "s3://-images", err: "begin and end with a letter or digit"},
		{name: "ends with dot", in: "s3://images.", err: "begin and end with a letter or digit"},
		{name: "two dots", in: "s3://my..images", err: `".."`},
		{name: "dot hyphen", in: "s3://my.-images", err: `".-"`},
		{name: "hyphen dot", in: "s3://my-.images", err: `"-."`},
		{name: "ip address", in: "s3://192.168.5.4", err: "IP address"},
		{name: "reserved prefix xn", in: "s3://xn--images", err: "xn--"},
		{name: "reserved prefix sthree", in: "s3://sthree-images", err: "sthree-"},
		{name: "reserved suffix alias", in: "s3://images-s3alias", err: "-s3alias"},
		{name: "reserved suffix mrap", in: "s3://images.mrap", err: ".mrap"},
		{name: "double slash in prefix", in: "s3://images/a//b", err: "empty name"},
		{name: "leading slash in prefix", in: "s3://images//a", err: "begin or end with a slash"},
		{name: "two trailing slashes", in: "s3://images/a//", err: "begin or end with a slash"},
		{name: "dot dot in prefix", in: "s3://images/a/../b", err: `".."`},
		{name: "dot in prefix", in: "s3://images/./b", err: `"."`},
		{name: "control character", in: "s3://images/a\nb", err: "control character"},
		{name: "bad utf-8", in: "s3://images/a\xffb", err: "UTF-8"},
		{name: "prefix too long", in: "s3://images/" + strings.Repeat("p", MaxPrefixLen+1), err: "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bucket, prefix, err := ParseLocation(tc.in)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("ParseLocation(%q) = %q, %q; want an error with %q", tc.in, bucket, prefix, tc.err)
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseLocation(%q) error %q does not say %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLocation(%q): %v", tc.in, err)
			}
			if bucket != tc.bucket || prefix != tc.prefix {
				t.Fatalf("ParseLocation(%q) = %q, %q; want %q, %q", tc.in, bucket, prefix, tc.bucket, tc.prefix)
			}
		})
	}
}

func FuzzParseLocation(f *testing.F) {
	for _, s := range []string{
		"s3://images", "s3://images/lab1/", "s3://a.b-c/x/y/z", "s3:///x", "s3://192.168.0.1",
		"s3://images/a//b", "s3://images/./x", "S3://IMAGES", "s3://xn--abc", "s3://images/\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bucket, prefix, err := ParseLocation(s)
		if err != nil {
			if bucket != "" || prefix != "" {
				t.Fatalf("ParseLocation(%q) failed but returned %q, %q", s, bucket, prefix)
			}
			return
		}
		// What it accepts, S3 and minio-go accept too.
		if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
			t.Fatalf("ParseLocation(%q) accepted bucket %q that minio-go rejects: %v", s, bucket, err)
		}
		if err := ValidatePrefix(prefix); err != nil {
			t.Fatalf("ParseLocation(%q) returned invalid prefix %q: %v", s, prefix, err)
		}
		if strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") || strings.Contains(prefix, "//") {
			t.Fatalf("ParseLocation(%q) returned prefix %q with stray slashes", s, prefix)
		}
		if err := s3utils.CheckValidObjectName(prefix + "/chunks/ab/" + strings.Repeat("ab", 32)); err != nil {
			t.Fatalf("ParseLocation(%q): keys under prefix %q are invalid: %v", s, prefix, err)
		}
		// The location it names parses back to the same place.
		loc := "s3://" + bucket
		if prefix != "" {
			loc += "/" + prefix
		}
		b2, p2, err := ParseLocation(loc)
		if err != nil || b2 != bucket || p2 != prefix {
			t.Fatalf("ParseLocation(%q) = %q, %q; but %q parses to %q, %q, %v", s, bucket, prefix, loc, b2, p2, err)
		}
	})
}
