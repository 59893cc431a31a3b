// pulumi-resource-proxmoxve is the provider plugin: bpg's provider behind the bridge, serving the
// schema and the mux table that tfgen generated at build time (both embedded; not committed).
package main

import (
	"context"
	_ "embed"
	"os"
	"os/signal"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	proxmoxve "github.com/pve-ceph-ha/tools/proxmoxve"
)

//go:embed schema.json
var schema []byte

//go:embed bridge-metadata.json
var metadata []byte

func main() {
	stopOnInterrupt()
	tfbridge.MainWithMuxer(context.Background(), "proxmoxve", proxmoxve.Provider(metadata), schema)
}

// stopOnInterrupt: the engine stops a plugin by sending SIGINT to its process group, then waits up
// to 5 s for it to exit before SIGKILL (pkg/v3 resource/plugin/plugin.go, kill). A process started
// with SIGINT ignored (under nohup, or `&` in a shell without job control) keeps it ignored in Go
// unless it asks for the signal (os/signal: "If the program was started with SIGHUP or SIGINT
// ignored, and Notify is called for either signal, a signal handler will be installed"): every
// pulumi command would wait those 5 s. Asked for here, it ends the plugin at once (issue #22).
// The engine sends it only then: a plugin has its own process group, a terminal's ^C never reaches it.
func stopOnInterrupt() {
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	go func() {
		<-interrupted
		os.Exit(0)
	}()
}
