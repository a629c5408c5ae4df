package activities_test

import (
	"reflect"
	"testing"

	"tms/activities"
)

func TestNamesAreRegionMethods(t *testing.T) {
	rt := reflect.TypeFor[*activities.Region]()
	for _, name := range []string{activities.NameWaitForAgent, activities.NamePullFromPeer, activities.NamePullFromRelay, activities.NamePushToRelay} {
		if _, ok := rt.MethodByName(name); !ok {
			t.Errorf("activity %q is not a method of *Region: it is registered under another name", name)
		}
	}
}
