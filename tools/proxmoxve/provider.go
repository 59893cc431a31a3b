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
	return info
}
