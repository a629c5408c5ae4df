package workflows

// The names the workers register the workflows under: the functions' names, as the Temporal SDK
// derives them from a function passed to RegisterWorkflow or ExecuteWorkflow. Histories,
// visibility queries (WorkflowType = '…') and `tms task` name workflows by these; a test checks
// each still matches its function, so renaming a function without them fails the build's tests
// instead of the listings.
const (
	NameShareImage      = "ShareImage"
	NameCaptureImage    = "CaptureImage"
	NameDeployImage     = "DeployImage"
	NameDeployTerminal  = "DeployTerminal"
	NameUpdateImage     = "UpdateImage"
	NameUpdateTerminal  = "UpdateTerminal"
	NameRegionAdmin     = "RegionAdmin"
	NameCentralAdmin    = "CentralAdmin"
	NameRegisterRegion  = "RegisterRegion"
	NameRegisterVersion = "RegisterVersion"
	NamePowerTerminals  = "PowerTerminals"
	NameConfigureRegion = "ConfigureRegion"
	NamePlanImage       = "PlanImage"
	NamePublishBootEnv  = "PublishBootEnv"
	NameBootEnvRollout  = "BootEnvRollout"
)

// QueryProgress is the query every long workflow answers with its progress.
const QueryProgress = "progress"
