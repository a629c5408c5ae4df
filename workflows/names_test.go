package workflows

import (
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// sdkName is the name the Temporal SDK gives a workflow function passed by value.
func sdkName(fn any) string {
	full := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).Name()
	return strings.TrimSuffix(full[strings.LastIndex(full, ".")+1:], "-fm")
}

func TestNamesAreTheRegisteredFunctionNames(t *testing.T) {
	for name, fn := range map[string]any{
		NameShareImage:      ShareImage,
		NamePublishBootEnv:  PublishBootEnv,
		NameBootEnvRollout:  BootEnvRollout,
		NameCaptureImage:    CaptureImage,
		NameDeployImage:     DeployImage,
		NameDeployTerminal:  DeployTerminal,
		NameRegionAdmin:     RegionAdmin,
		NameCentralAdmin:    CentralAdmin,
		NameRegisterRegion:  RegisterRegion,
		NameRegisterVersion: RegisterVersion,
		NamePowerTerminals:  PowerTerminals,
		NameUpdateImage:     UpdateImage,
		NameUpdateTerminal:  UpdateTerminal,
		NameConfigureRegion: ConfigureRegion,
		NamePlanImage:       PlanImage,
	} {
		if got := sdkName(fn); got != name {
			t.Errorf("workflow function %s is registered as %q, not %q", got, got, name)
		}
	}
}
