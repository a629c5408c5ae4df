package tftpd

import (
	"bytes"
	"log/slog"
	"strconv"
	"testing"
)

// BenchmarkFetch reads ipxe.efi (1 MiB here, Debian's is 830 KiB) over loopback with pin/tftp's
// client, with the default 512-byte blocks and with the 1468-byte blocks iPXE and most UEFI
// firmware ask for. MB/s is the figure to read.
//
//	go test -run '^$' -bench Fetch ./bootsvc/tftpd/
func BenchmarkFetch(b *testing.B) {
	dir, files := testDir(b)
	want := files["ipxe.efi"]
	addr := start(b, &Server{Dir: dir, Log: slog.New(slog.DiscardHandler)})
	for _, blksize := range []int{512, 1468} {
		b.Run("blksize="+strconv.Itoa(blksize), func(b *testing.B) {
			b.SetBytes(int64(len(want)))
			for b.Loop() {
				got, err := fetch(addr, "ipxe.efi", blksize)
				if err != nil || !bytes.Equal(got, want) {
					b.Fatalf("got %d bytes, %v", len(got), err)
				}
			}
		})
	}
}
