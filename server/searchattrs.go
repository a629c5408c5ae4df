package server

import (
	"context"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"

	"tms/workflows"
)

// EnsureSearchAttributes registers the search attributes tms tasks carry
// (workflows.SearchAttributes) in the client's namespace, if they are missing. Central runs it
// when it starts; on a cluster where tms may not change the namespace, an operator registers
// them once (docs/operations.md says how) and this finds them there.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("listing the search attributes of namespace %s: %w", namespace, err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for _, k := range workflows.SearchAttributes() {
		want := k.GetValueType()
		if got, ok := have.GetCustomAttributes()[k.GetName()]; ok {
			if got != want {
				return fmt.Errorf("namespace %s has search attribute %s of type %s; tms needs %s", namespace, k.GetName(), got, want)
			}
			continue
		}
		missing[k.GetName()] = want
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: missing}); err != nil {
		return fmt.Errorf("registering search attributes %v in namespace %s: %w", keys(missing), namespace, err)
	}
	return nil
}

func keys(m map[string]enumspb.IndexedValueType) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
