package proxmoxve

import (
	"context"
	"os"

	"github.com/bpg/terraform-provider-proxmox/fwprovider/config"
	"github.com/bpg/terraform-provider-proxmox/proxmoxtf"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
)

// Both halves of bpg's provider build their own API client in their Configure; each gets the
// failover (endpoints.go) in front of its transport, with the one set of candidates.

// withFailoverAPI wraps the SDKv2 half's configure (the VM resource lives there).
func withFailoverAPI(p *schema.Provider) *schema.Provider {
	inner := p.ConfigureContextFunc
	if inner == nil {
		return p
	}
	p.ConfigureContextFunc = func(ctx context.Context, d *schema.ResourceData) (any, diag.Diagnostics) {
		meta, diags := inner(ctx, d)
		if diags.HasError() {
			return meta, diags
		}
		cfg, ok := meta.(proxmoxtf.ProviderConfiguration)
		if !ok {
			return meta, diags
		}
		client, err := cfg.GetClient()
		if err != nil {
			return meta, diags
		}
		endpoint, _ := d.Get("endpoint").(string)
		if err := installFailover(client.API().HTTP(), endpointOrEnv(endpoint), sdkNodeAddresses(d)); err != nil {
			return meta, append(diags, diag.FromErr(err)...)
		}
		return meta, diags
	}
	return p
}

func sdkNodeAddresses(d *schema.ResourceData) []string {
	var out []string
	blocks, _ := d.Get("ssh").([]any)
	for _, block := range blocks {
		fields, _ := block.(map[string]any)
		nodes, _ := fields["node"].([]any)
		for _, node := range nodes {
			if n, ok := node.(map[string]any); ok {
				if address, ok := n["address"].(string); ok {
					out = append(out, address)
				}
			}
		}
	}
	return out
}

func endpointOrEnv(endpoint string) string {
	if endpoint != "" {
		return endpoint
	}
	if v := os.Getenv("PROXMOX_VE_ENDPOINT"); v != "" {
		return v
	}
	return os.Getenv("PM_VE_ENDPOINT")
}

// frameworkFailover wraps the plugin-framework half (HA resources, groups, rules live there).
// bpg's framework provider implements provider.Provider and nothing more, so embedding it keeps
// its schema, resources and data sources as they are.
type frameworkFailover struct{ provider.Provider }

func withFailoverFramework(newProvider func() provider.Provider) func() provider.Provider {
	return func() provider.Provider { return frameworkFailover{newProvider()} }
}

func (p frameworkFailover) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	p.Provider.Configure(ctx, req, resp)
	if resp.Diagnostics.HasError() {
		return
	}
	res, ok := resp.ResourceData.(config.Resource)
	if !ok || res.Client == nil {
		return
	}
	var endpoint types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("endpoint"), &endpoint)...)
	var ssh types.List
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("ssh"), &ssh)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := installFailover(res.Client.API().HTTP(), endpointOrEnv(endpoint.ValueString()), frameworkNodeAddresses(ssh)); err != nil {
		resp.Diagnostics.AddError("Unable to set up the Proxmox VE API failover", err.Error())
	}
}

func frameworkNodeAddresses(ssh types.List) []string {
	var out []string
	for _, block := range ssh.Elements() {
		obj, ok := block.(types.Object)
		if !ok {
			continue
		}
		nodes, ok := obj.Attributes()["node"].(types.List)
		if !ok {
			continue
		}
		for _, node := range nodes.Elements() {
			if n, ok := node.(types.Object); ok {
				out = append(out, stringAttr(n.Attributes()["address"]))
			}
		}
	}
	return out
}

func stringAttr(v attr.Value) string {
	if s, ok := v.(types.String); ok {
		return s.ValueString()
	}
	return ""
}
