package proxmoxve

import (
	"testing"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	shim "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim"
)

// Every field of every resource carries the name the bridge would compute for it without
// nameEveryField, nested blocks included, and the bridge maps each name back to its field.
func TestEveryFieldIsNamedAsTheBridgeNamesIt(t *testing.T) {
	named := Provider([]byte("{}"))
	plain := idInputs(named.P) // the field infos before nameEveryField
	checked := 0
	named.P.ResourcesMap().Range(func(name string, r shim.Resource) bool {
		var before map[string]*tfbridge.SchemaInfo
		if plain[name] != nil {
			before = plain[name].Fields
		}
		checked += checkNames(t, name, r.Schema(), before, named.Resources[name].Fields, true)
		return true
	})
	if checked < 1000 {
		t.Fatalf("only %d fields checked", checked)
	}
}

func checkNames(t *testing.T, where string, sch shim.SchemaMap, before, after map[string]*tfbridge.SchemaInfo, top bool) int {
	checked := 0
	sch.Range(func(key string, s shim.Schema) bool {
		want := tfbridge.TerraformToPulumiNameV2(key, sch, before)
		if top && key == "id" {
			return true
		}
		field := after[key]
		if field == nil || field.Name != want {
			t.Errorf("%s.%s: named %v, the bridge names it %q", where, key, field, want)
			return true
		}
		if back := tfbridge.PulumiToTerraformName(want, sch, after); back != key {
			t.Errorf("%s.%s: %q maps back to %q", where, key, want, back)
		}
		checked++
		if block, ok := s.Elem().(shim.Resource); ok {
			var nested map[string]*tfbridge.SchemaInfo
			if before != nil && before[key] != nil && before[key].Elem != nil {
				nested = before[key].Elem.Fields
			}
			checked += checkNames(t, where+"."+key, block.Schema(), nested, field.Elem.Fields, false)
		}
		return true
	})
	return checked
}
