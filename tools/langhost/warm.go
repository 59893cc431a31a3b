package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// A Python program's first 0.3-0.4 s go to the interpreter's start and the SDK's imports
// (pulumi, grpc, protobuf, opentelemetry, the provider SDKs: `python -X importtime`), and they
// sit on the critical path of every pass: the engine calls Run only after the refresh, and the
// program registers nothing before its imports are done. The engine asks for the program's
// packages (GetRequiredPackages) before that refresh, about 1 s before Run on a no-op preview of
// the lab stack (`-v=9` timestamps). So the host starts the interpreter then, imports the SDK
// and the installed `pulumi_*` packages, and keeps it waiting on its standard input; Run hands it
// the program's arguments, working directory and config, and it runs the program as a cold
// start would (issue #22). Nothing of the program itself is imported before Run, but the modules
// its Pulumi.yaml names in the runtime option `preload` (a list of module names; upstream's host
// ignores options it does not know): they must not read the stack's config when imported, as the
// config is only in place once Run hands it over. A module that fails to import is dropped, for
// the program's own import to raise the error where it would cold.
//
// The waiting interpreter is started with the environment Run gives the program, less the two
// config variables, which Run sends with the arguments. If Run never comes (`pulumi about`,
// a failed refresh), the interpreter ends with the host (Pdeathsig) or when its input closes.
// A host that runs a second program, or another interpreter, starts that one cold.
const warmStart = `import json, os, sys
def _preload(name):
    before = set(sys.modules)
    try:
        __import__(name)
    except BaseException:
        for loaded in set(sys.modules) - before:
            sys.modules.pop(loaded, None)
try:
    import pkgutil, site
    import pulumi, pulumi.dynamic, pulumi.log, pulumi.runtime
    for module in pkgutil.iter_modules(site.getsitepackages()):
        if module.ispkg and module.name.startswith("pulumi_"):
            _preload(module.name)
    for name in PRELOAD:
        _preload(name)
except Exception:
    pass
line = sys.stdin.readline()
if not line:
    sys.exit(0)
request = json.loads(line)
os.environ.update(request["env"])
os.chdir(request["cwd"])
sys.argv = ["-c"] + request["argv"]
del json, line, request
exec(compile(QUIET_SHUTDOWN, "<pulumi-language-python>", "exec"))
`

type warmProgram struct {
	py             string
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr *shutdownFilter
}

type warmPool struct {
	mu      sync.Mutex
	started bool
	waiting *warmProgram
}

// start launches the waiting interpreter for the program info's virtualenv, once per host.
func (p *warmPool) start(info *pulumirpc.ProgramInfo) {
	if info == nil || info.GetProgramDirectory() == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return
	}
	p.started = true
	py, venv := pythonCommand(info)
	preload, err := json.Marshal(preloadModules(info))
	if err != nil {
		return
	}
	script := fmt.Sprintf("QUIET_SHUTDOWN = %q\nPRELOAD = %s\n%s", quietShutdown, preload, warmStart)
	cmd := exec.Command(py, "-u", "-c", script)
	cmd.Dir = info.GetProgramDirectory()
	cmd.Env = programEnv(venv)
	stdout, stderr := newShutdownFilter(os.Stdout), newShutdownFilter(os.Stderr)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return
	}
	if err := cmd.Start(); err != nil {
		return // Run starts the program cold, and reports the error if it has one too
	}
	p.waiting = &warmProgram{py: py, cmd: cmd, stdin: stdin, stdout: stdout, stderr: stderr}
}

// take hands out the waiting interpreter if it is the one Run wants; a mismatched one is ended.
func (p *warmPool) take(py string) *warmProgram {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.waiting
	p.waiting = nil
	if w != nil && w.py != py {
		_ = w.stdin.Close()
		_ = w.cmd.Wait()
		return nil
	}
	return w
}

// run gives the waiting interpreter its program: the exec script's arguments, the working
// directory, and the config variables a cold start gets in its environment.
func (w *warmProgram) run(args []string, pwd string, config map[string]string) error {
	request, err := json.Marshal(map[string]any{"argv": args, "cwd": pwd, "env": config})
	if err != nil {
		return err
	}
	if _, err := w.stdin.Write(append(request, '\n')); err != nil {
		return err
	}
	return w.stdin.Close()
}

// programEnv is the environment of the Python program: the host's, with the virtualenv's bin
// first on PATH when there is one.
func programEnv(venv string) []string {
	env := os.Environ()
	if venv != "" {
		env = append(env,
			"VIRTUAL_ENV="+venv,
			"PATH="+filepath.Join(venv, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	return env
}

// preloadModules is the runtime option `preload` of Pulumi.yaml: the program's module names that
// the waiting interpreter imports ahead of Run (strings only; anything else is left out).
func preloadModules(info *pulumirpc.ProgramInfo) []string {
	modules := []string{}
	if info.GetOptions() == nil {
		return modules
	}
	list, _ := info.GetOptions().AsMap()["preload"].([]any)
	for _, item := range list {
		if name, ok := item.(string); ok && name != "" {
			modules = append(modules, name)
		}
	}
	return modules
}
