// Package auth is who may do what in tms: users and their roles, the tokens central signs for
// them, their passwords, and the policy the Temporal frontend's authorizer applies to every call
// (package auth/temporalauth plugs it into the server).
//
//	tok, _ := auth.Mint(key, auth.Claims{Subject: "alice", Role: auth.RoleOperator, Regions: []string{"region-a"}}, now, 12*time.Hour)
//	c, err := auth.Verify(key.Public(), tok, now)          // strict: length, format, key, expiry
//	d := auth.Decide(c, auth.Call{API: "StartWorkflowExecution", Request: req}, lookup)
//	if !d.Allow { log d.Reason }                            // "operator alice may act in region-a only, not region-b"
//
// Roles: admin may do everything; operator starts and controls tasks and changes inventory in the
// regions granted; viewer only reads; worker is what tms's own servers present (central's worker,
// and a region's worker scoped to its region).
package auth
