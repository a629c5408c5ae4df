package store

// Wrapper is a Backend in front of another (a region's read-through to its sibling servers):
// Unwrap returns the one behind it, whose own features (a directory's packs) the store still uses.
type Wrapper interface {
	Backend
	Unwrap() Backend
}

// asDir returns the directory backend b is, or wraps, if any.
func asDir(b Backend) (*Dir, bool) {
	for {
		switch v := b.(type) {
		case *Dir:
			return v, true
		case Wrapper:
			b = v.Unwrap()
		default:
			return nil, false
		}
	}
}
