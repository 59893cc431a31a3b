// Package proxmoxve is the project's bridge of bpg's Terraform provider for Proxmox VE
// (github.com/bpg/terraform-provider-proxmox) to Pulumi, through pulumi-terraform-bridge.
//
// The official plugin (muhlba91/pulumi-proxmoxve) cannot be fetched or built here: its Go module
// is refused by the module proxy. It is itself a thin bridge program around bpg's provider, so
// this package does the same job with the same upstream parts, and names every resource,
// function and property exactly as the pinned Python SDK (pulumi-proxmoxve 8.3.0) does. The
// contract test (tests/integration/test_proxmoxve_contract.py) proves it on every make test.
package proxmoxve

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/bpg/terraform-provider-proxmox/fwprovider"
	"github.com/bpg/terraform-provider-proxmox/proxmoxtf/provider"
	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	shim "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Version is the plugin's version, stamped at link time (-X) from tools/versions.env.
var Version = "8.3.0"

const pkg = "proxmoxve"

// Token turns a Terraform type name into the Pulumi module and member name the SDK uses.
//
// bpg names resources two ways: proxmox_virtual_environment_<x> (the original names, which the
// SDK calls "legacy" and suffixes with Legacy) and proxmox_<x> (the newer names). Two parts give
// the "index" module; more parts make every middle part a module segment:
//
//	proxmox_virtual_environment_vm  -> index, VmLegacy
//	proxmox_hagroup                 -> index, Hagroup
//	proxmox_storage_nfs             -> storage, Nfs
//	proxmox_sdn_zone_simple         -> sdn/zone, Simple
func Token(tfName string) (module, member string, err error) {
	legacy := strings.HasPrefix(tfName, "proxmox_virtual_environment_")
	rest := strings.TrimPrefix(tfName, "proxmox_virtual_environment_")
	if !legacy {
		if !strings.HasPrefix(tfName, "proxmox_") {
			return "", "", fmt.Errorf("%s: not a proxmox_ type", tfName)
		}
		rest = strings.TrimPrefix(tfName, "proxmox_")
	}
	parts := strings.Split(rest, "_")
	for _, p := range parts {
		if p == "" || unicode.IsDigit(rune(p[0])) {
			return "", "", fmt.Errorf("%s: a name part is empty or starts with a digit", tfName)
		}
	}
	module = "index"
	if len(parts) > 1 {
		module = strings.Join(parts[:len(parts)-1], "/")
	}
	member = parts[len(parts)-1]
	if legacy {
		member += "Legacy"
	}
	return module, strings.ToUpper(member[:1]) + member[1:], nil
}

func tokenStrategy() tfbridge.Strategy {
	return tfbridge.Strategy{
		Resource: func(tfName string, r *tfbridge.ResourceInfo) error {
			if r.Tok != "" {
				return nil
			}
			module, member, err := Token(tfName)
			r.Tok = tfbridge.MakeResource(pkg, module, member)
			return err
		},
		DataSource: func(tfName string, d *tfbridge.DataSourceInfo) error {
			if d.Tok != "" {
				return nil
			}
			module, member, err := Token(tfName)
			d.Tok = tfbridge.MakeDataSource(pkg, module, "get"+member)
			return err
		},
	}
}

// bridgeNamedIDs are the resources whose "id" input the SDK names the way newer bridges do by
// themselves (<type>Id, e.g. sdnControllerEvpnId) rather than resourceId.
var bridgeNamedIDs = map[string]bool{"proxmox_sdn_controller_evpn": true}

// idInputs finds the resources whose Terraform schema has "id" as an input. Pulumi reserves "id"
// for the resource's ID, so the SDK renames that input (resourceId, or <type>Id for the names in
// bridgeNamedIDs) and the Pulumi ID is computed from it: the bridge at this version refuses an
// "id" input rather than renaming it.
func idInputs(p shim.Provider) map[string]*tfbridge.ResourceInfo {
	out := map[string]*tfbridge.ResourceInfo{}
	p.ResourcesMap().Range(func(name string, r shim.Resource) bool {
		id, ok := r.Schema().GetOk("id")
		if !ok || !(id.Optional() || id.Required()) {
			return true
		}
		field := "resourceId"
		if bridgeNamedIDs[name] {
			field = camel(strings.TrimPrefix(name, "proxmox_")) + "Id"
		}
		out[name] = &tfbridge.ResourceInfo{
			Fields:    map[string]*tfbridge.SchemaInfo{"id": {Name: field, Type: "string"}},
			ComputeID: idFrom(resource.PropertyKey(field)),
		}
		return true
	})
	return out
}

func camel(snake string) string {
	parts := strings.Split(snake, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

func idFrom(field resource.PropertyKey) func(context.Context, resource.PropertyMap) (resource.ID, error) {
	return func(_ context.Context, state resource.PropertyMap) (resource.ID, error) {
		v, ok := state[field]
		if !ok {
			v = state["id"]
		}
		switch {
		case v.IsString():
			return resource.ID(v.StringValue()), nil
		case v.IsNumber():
			return resource.ID(strconv.FormatInt(int64(v.NumberValue()), 10)), nil
		}
		return "", fmt.Errorf("%s is not set", field)
	}
}

// Provider is the bridge's description of the muxed provider (bpg's SDKv2 half and its
// plugin-framework half). metadata is bridge-metadata.json as tfgen wrote it ("{}" for tfgen).
func Provider(metadata []byte) tfbridge.ProviderInfo {
	ctx := context.Background()
	p := pfbridge.MuxShimWithPF(ctx, shimv2.NewProvider(withFailoverAPI(withNodeFailures(withOwnership(provider.ProxmoxVirtualEnvironment())))), withFailoverFramework(fwprovider.New(Version))())
	info := tfbridge.ProviderInfo{
		P:            p,
		Name:         "proxmox",
		DisplayName:  "Proxmox Virtual Environment (Proxmox VE)",
		Description:  "bpg's Terraform provider for Proxmox VE, bridged to Pulumi by pve-ceph-ha (tokens of pulumi-proxmoxve).",
		Keywords:     []string{"proxmox", "proxmoxve", "category/infrastructure"},
		License:      "Apache-2.0",
		GitHubOrg:    "bpg",
		Version:      Version,
		Config:       map[string]*tfbridge.SchemaInfo{},
		Resources:    idInputs(p),
		DataSources:  map[string]*tfbridge.DataSourceInfo{},
		MetadataInfo: tfbridge.NewProviderMetadata(metadata),
		Python: &tfbridge.PythonInfo{
			PackageName:          "pulumi_proxmoxve",
			RespectSchemaVersion: true,
			Requires:             map[string]string{"pulumi": ">=3.0.0,<4.0.0"},
		},
	}
	info.MustComputeTokens(tokenStrategy())
	info.SetAutonaming(255, "-")
	nameEveryField(p, info.Resources)
	return info
}

// nameEveryField gives every field of every resource, nested blocks included, its Pulumi name
// explicitly: the name the bridge computes for it (TerraformToPulumiNameV2), computed once here.
//
// The bridge maps a Pulumi property back to its Terraform field (PulumiToTerraformName, on every
// property path of every Diff and Read) by computing the Pulumi name of each field of the object
// in turn until one matches, building strings each time, unless a field's SchemaInfo names it.
// For bpg's VM (hundreds of fields, nested) that was 27% of the plugin's CPU in a 30-VM run, and
// what grows with the VMs (issue #22; bench/engine_stack.py --profile). The bridge's authors
// left the cost for a cache "if it comes up" (pulumi-terraform-bridge#782, #780). The names are
// the bridge's own, computed before any is set, so the schema does not change (a Go test says so).
func nameEveryField(p shim.Provider, resources map[string]*tfbridge.ResourceInfo) {
	p.ResourcesMap().Range(func(name string, r shim.Resource) bool {
		info := resources[name]
		if info == nil {
			info = &tfbridge.ResourceInfo{}
			resources[name] = info
		}
		info.Fields = nameFields(r.Schema(), info.Fields, true)
		return true
	})
}

// nameFields sets the Pulumi name of each field of sch (and of the fields of its nested blocks) in
// fields; a resource's own "id" (top) is left to the bridge, which names it only with a ComputeID.
func nameFields(sch shim.SchemaMap, fields map[string]*tfbridge.SchemaInfo, top bool) map[string]*tfbridge.SchemaInfo {
	if fields == nil {
		fields = map[string]*tfbridge.SchemaInfo{}
	}
	names := map[string]string{}
	sch.Range(func(key string, _ shim.Schema) bool {
		names[key] = tfbridge.TerraformToPulumiNameV2(key, sch, fields) // all computed before any is set
		return true
	})
	for key, name := range names {
		if top && key == "id" {
			continue
		}
		field := fields[key]
		if field == nil {
			field = &tfbridge.SchemaInfo{}
			fields[key] = field
		}
		if field.Name == "" {
			field.Name = name
		}
		if block, ok := sch.Get(key).Elem().(shim.Resource); ok {
			if field.Elem == nil {
				field.Elem = &tfbridge.SchemaInfo{}
			}
			field.Elem.Fields = nameFields(block.Schema(), field.Elem.Fields, false)
		}
	}
	return fields
}
