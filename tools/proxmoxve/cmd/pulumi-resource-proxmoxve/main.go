// pulumi-resource-proxmoxve is the provider plugin: bpg's provider behind the bridge, serving the
// schema and the mux table that tfgen generated at build time (both embedded; not committed).
package main

import (
	"context"
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	proxmoxve "github.com/pve-ceph-ha/tools/proxmoxve"
)

//go:embed schema.json
var schema []byte

//go:embed bridge-metadata.json
var metadata []byte

func main() {
	tfbridge.MainWithMuxer(context.Background(), "proxmoxve", proxmoxve.Provider(metadata), schema)
}
