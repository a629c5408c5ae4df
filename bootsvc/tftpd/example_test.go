package tftpd_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"

	"tms/bootsvc/tftpd"
)

func ExampleServer() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	srv := &tftpd.Server{
		Dir:   "/usr/lib/ipxe",
		Files: []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"},
		Log:   slog.Default(),
		OnRead: func(remote netip.AddrPort, name string, bytes int64) {
			slog.Info("PC fetched iPXE", "pc", remote.Addr(), "file", name, "bytes", bytes)
		},
	}
	// Returns ctx.Err() once ctx ends, or why it could not serve.
	if err := srv.ListenAndServe(ctx, ":69"); err != nil && ctx.Err() == nil {
		slog.Error("tftp", "err", err)
	}
}

func ExampleCleanName() {
	for _, raw := range []string{"/undionly.kpxe", "../../etc/passwd", "pxelinux.0"} {
		name, err := tftpd.CleanName(raw)
		fmt.Printf("%q %v\n", name, err)
	}
	// Output:
	// "undionly.kpxe" <nil>
	// "" invalid file name: name contains ".."
	// "" file not in the allow-list
}
