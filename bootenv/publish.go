package bootenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"tms/imageio"
	"tms/manifest"
	"tms/store"
)

// DefaultName is the name a version is published under when none is given.
const DefaultName = "default"

// PublishOptions say what Publish makes of a directory.
type PublishOptions struct {
	// Name is the bootenv's name (default DefaultName); its image is manifest.BootEnvPrefix+Name.
	Name string
	// AgentVersion is the release of the agent in the initrd, as the publisher knows it.
	AgentVersion string
	// Force publishes a kernel that is not a bzImage or an initrd whose /init is not a static
	// executable: a rollout's canary then stops it (for showing that it does).
	Force bool
}

// PublishResult is the published version.
type PublishResult struct {
	Image     string // bootenv.NAME
	Version   *store.Version
	Info      BundleInfo
	Import    *imageio.ImportResult
	Unchanged bool
	// Problems lists what is wrong with the kernel or initrd (only with Force).
	Problems []string
}

// Publish stores dir/vmlinuz and dir/initrd (tms bootenv build's output) in st as a new version
// of the image bootenv.NAME: one bundle, chunked like any disk image. Central then signs it
// like any version (the caller registers it), and regions share, verify, pin and evict it as
// they do images.
func Publish(ctx context.Context, st *store.Store, dir string, o PublishOptions) (*PublishResult, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	image := manifest.BootEnvPrefix + o.Name
	if err := manifest.ValidateName(image); err != nil {
		return nil, fmt.Errorf("bootenv name %q: %w", o.Name, err)
	}
	kernel, err := readBounded(filepath.Join(dir, KernelFile), MaxKernelSize)
	if err != nil {
		return nil, err
	}
	initrd, err := readBounded(filepath.Join(dir, InitrdFile), MaxInitrdSize)
	if err != nil {
		return nil, err
	}
	res := &PublishResult{Image: image}
	kv, kerr := KernelVersion(kernel)
	if kerr != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("%s: %v", KernelFile, kerr))
	}
	if err := CheckInitrd(initrd); err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	if len(res.Problems) > 0 && !o.Force {
		return nil, fmt.Errorf("%s would not boot: %v (--force publishes it anyway, for a rollout's canary to stop)", dir, res.Problems)
	}
	tmp, err := os.CreateTemp("", "tms-bootenv-*.bundle")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	res.Info, err = WriteBundle(tmp, BundleInfo{Name: o.Name, KernelVersion: kv, AgentVersion: o.AgentVersion}, kernel, initrd)
	if err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	source, _ := filepath.Abs(dir)
	if source = "bootenv:" + source; len(source) > 1000 {
		source = source[:1000] // meta.source takes 1024 bytes at most
	}
	imp, err := imageio.Import(ctx, st, tmp.Name(), imageio.ImportOptions{Name: image, Source: source})
	if err != nil {
		return nil, err
	}
	res.Version, res.Import, res.Unchanged = imp.Version, imp, imp.Unchanged
	return res, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 || fi.Size() > limit {
		return nil, fmt.Errorf("%s: want a regular file of 1 to %d bytes", path, limit)
	}
	return os.ReadFile(path)
}
