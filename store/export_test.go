package store

// WithBeforeRemove returns o with f run between choosing a version and removing it, so tests
// can take a hold in that gap.
func WithBeforeRemove(o EvictOptions, f func(VersionInfo)) EvictOptions {
	o.beforeRemove = f
	return o
}
