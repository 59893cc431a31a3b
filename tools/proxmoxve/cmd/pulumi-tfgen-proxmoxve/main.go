// pulumi-tfgen-proxmoxve writes the plugin's schema.json and bridge-metadata.json
// (`pulumi-tfgen-proxmoxve schema --out DIR --skip-examples`); tools/build-proxmoxve.sh runs it.
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	proxmoxve "github.com/pve-ceph-ha/tools/proxmoxve"
)

func main() {
	tfgen.MainWithMuxer("proxmoxve", proxmoxve.Provider([]byte("{}")))
}
