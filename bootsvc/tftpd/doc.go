// Package tftpd is the read-only TFTP server of a region's boot service: classroom PCs PXE
// boot, and their firmware fetches an iPXE binary from it (RFC 1350, with the blksize option
// of RFC 2348 and tsize of RFC 2349), after which iPXE continues over HTTP.
//
// Only the names in an allow-list are served (DefaultFiles: undionly.kpxe for BIOS PCs,
// ipxe.efi and snponly.efi for x86-64 UEFI, their arm64 builds if present), from one directory
// (DefaultDir: Debian's ipxe package). [CleanName] is the one place where a requested name
// becomes a file name. The files are read into memory when the server starts; write requests
// and everything else are refused with a TFTP error packet that says why.
//
// Each transfer logs one line: info when sent, warn when it failed. UEFI firmware first asks
// for a file's size (tsize) and ends that transfer itself once it has the answer; that size
// probe is normal and logs at debug level only.
//
// A region runs it next to its other servers, on port 69:
//
//	srv := &tftpd.Server{Log: log} // DefaultFiles from /usr/lib/ipxe
//	g.Go(func() error { return srv.ListenAndServe(ctx, ":69") })
package tftpd
