package imageio_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"tms/internal/storetest"

	"tms/imageio"
)

// loopDevice attaches a file of size bytes to a loop device and returns the device's path.
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	f := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", f).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev
}

func TestBlockDevices(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	small := storetest.Import(t, s, storetest.SampleDisk(t, 8*mib, 20), "small")
	big := storetest.Import(t, s, storetest.SampleDisk(t, 32*mib, 21), "big")
	dev := loopDevice(t, 16*mib)

	_, err := imageio.Export(ctx, s, big.Version, dev, imageio.ExportOptions{})
	if err == nil || !strings.Contains(err.Error(), "holds 16777216 bytes, the image needs 33554432") {
		t.Fatalf("export of a 32 MiB image to a 16 MiB device: %v", err)
	}
	res, err := imageio.Export(ctx, s, small.Version, dev, imageio.ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Written == 0 {
		t.Fatal("nothing written to the device")
	}
	// The device now starts with the small image: importing it back (device size 16 MiB, the
	// rest zeros) gives the same chunks for the first 8 MiB.
	back, err := imageio.Import(ctx, s, dev, imageio.ImportOptions{Name: "fromdev"})
	if err != nil {
		t.Fatal(err)
	}
	m, sm := back.Version.Manifest, small.Version.Manifest
	if m.DiskSize != 16*mib {
		t.Fatalf("device imported as %d bytes", m.DiskSize)
	}
	for i, id := range sm.Chunks {
		if m.Chunks[i] != id {
			t.Fatalf("chunk %d differs after a round trip through the device", i)
		}
	}
	// Exporting again skips every range that is already right.
	res, err = imageio.Export(ctx, s, small.Version, dev, imageio.ExportOptions{})
	if err != nil || res.Written != 0 {
		t.Fatalf("second export to the device: wrote %d chunks, %v", res.Written, err)
	}
}
