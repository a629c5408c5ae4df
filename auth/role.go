package auth

import (
	"fmt"
	"regexp"
	"slices"
)

// Role is what a user may do.
type Role string

// The roles. RoleWorker is never a user's: central mints it for its own worker and for regions.
const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleViewer   Role = "viewer"
	RoleWorker   Role = "worker"
)

// UserRoles are the roles a user may have, as `tms user add --role` takes them.
var UserRoles = []Role{RoleAdmin, RoleOperator, RoleViewer}

// ParseUserRole reads a user's role.
func ParseUserRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(UserRoles, r) {
		return "", fmt.Errorf("role %q: want admin, operator or viewer", s)
	}
	return r, nil
}

func (r Role) valid() bool { return slices.Contains(UserRoles, r) || r == RoleWorker }

// MaxNameLen bounds user names.
const MaxNameLen = 64

var userName = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,63}$`)

// ValidateUserName checks a user name: lowercase letters, digits, '_', '.', '-', at most 64,
// starting with a letter or '_'. Names never contain ':' so none reads as "schedule:NAME".
func ValidateUserName(name string) error {
	if !userName.MatchString(name) {
		return fmt.Errorf("user name %q: use lowercase letters, digits, '_', '.' and '-', at most %d, starting with a letter", clip(name), MaxNameLen)
	}
	return nil
}

var regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidateRegion checks a region id as state.ValidateRegionID does (auth does not import state).
func ValidateRegion(id string) error {
	if !regionName.MatchString(id) {
		return fmt.Errorf("region id %q: use lowercase letters, digits and '-', at most 63, starting with a letter or digit", clip(id))
	}
	return nil
}

// MaxRegions bounds the regions one user is granted.
const MaxRegions = 64

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
