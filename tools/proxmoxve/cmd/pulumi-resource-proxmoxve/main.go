// pulumi-resource-proxmoxve is the provider plugin: bpg's provider behind the bridge, serving the
// schema and the mux table that tfgen generated at build time (both embedded; not committed).
package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	proxmoxve "github.com/pve-ceph-ha/tools/proxmoxve"
)

//go:embed schema.json
var schema []byte

//go:embed bridge-metadata.json
var metadata []byte

func main() {
	collectLess()
	stopProfile := startProfile()
	stopOnInterrupt(stopProfile)
	tfbridge.MainWithMuxer(context.Background(), "proxmoxve", proxmoxve.Provider(metadata), schema)
	stopProfile()
}

// gcPercent is the plugin's garbage-collection target (GOGC) unless GOGC is set. A run's work here
// is many short-lived copies of bpg's VM schema (the SDK's schemaMap.DeepCopy in every Diff, the
// bridge's state upgrade in every Read): at Go's default 100 the collector took about a quarter of
// the plugin's CPU in a no-op preview of 30 VMs. At 400 the plugin's CPU went 2.3 s -> 1.7 s and the
// preview 5.5 s -> 5.2 s on 2 cores, for about 70 MB more peak memory (105 -> 175 MB, 30 VMs).
// Measured with GOGC=100/400/800/off (off: 780 MB, and slower in page faults); issue #22.
const gcPercent = 400

// collectLess sets gcPercent, unless the operator's GOGC says otherwise (the runtime read it).
func collectLess() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// startProfile: with PVECEPHHA_PLUGIN_CPUPROFILE=DIR, this process's CPU profile goes to
// DIR/proxmoxve-<pid>.pprof (`go tool pprof -top` reads it): where a run's time goes in the plugin
// and the bridge, per VM (bench/engine_stack.py --profile, issue #22). Off by default.
func startProfile() func() {
	dir := os.Getenv("PVECEPHHA_PLUGIN_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("proxmoxve-%d.pprof", os.Getpid())))
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// stopOnInterrupt: the engine stops a plugin by sending SIGINT to its process group, then waits up
// to 5 s for it to exit before SIGKILL (pkg/v3 resource/plugin/plugin.go, kill). A process started
// with SIGINT ignored (under nohup, or `&` in a shell without job control) keeps it ignored in Go
// unless it asks for the signal (os/signal: "If the program was started with SIGHUP or SIGINT
// ignored, and Notify is called for either signal, a signal handler will be installed"): every
// pulumi command would wait those 5 s. Asked for here, it ends the plugin at once (issue #22).
// The engine sends it only then: a plugin has its own process group, a terminal's ^C never reaches it.
func stopOnInterrupt(before func()) {
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	go func() {
		<-interrupted
		before()
		os.Exit(0)
	}()
}
