// Command pulumi-language-python is a minimal Pulumi language host for Python,
// written for pve-ceph-ha because the module proxy this project can reach does
// not serve the upstream host module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3).
//
// It implements only what `pulumi preview/up/destroy/refresh` need for a
// Python program whose dependencies are already installed (by `make setup`):
// Run starts `python -u pulumi-language-python-exec ...` (the helper script
// from the pulumi sdk module, installed next to this binary) against the
// engine's resource monitor. Plugin discovery (GetRequiredPackages) reports
// nothing: the resource plugins are pre-installed in PULUMI_HOME, and the
// engine loads them by name/version when the program registers resources.
// GenerateProgram (generate.go) turns PCL into Python for `pulumi import`.
// Dependency installation, project and package generation, templates and
// packing are not supported.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
)

// version is set with -ldflags "-X main.version=...".
var version = "0.0.0-dev"

// Exit code the exec script uses after it has already reported a
// user-actionable error through the engine (so the engine should just bail).
const userActionableExit = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	engineAddress string
	execScript    string
	warm          warmPool
}

func main() {
	// The engine passes optional flags (--logtostderr, -v=N, --tracing X,
	// --logflow, ...) followed by the engine address as the last argument.
	var engine string
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--tracing" || a == "-tracing" || a == "--root" || a == "-root" {
			i++ // flag with a separate value
			continue
		}
		if strings.HasPrefix(a, "-") {
			continue
		}
		engine = a
	}
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		fmt.Println(version)
		return
	}
	if engine == "" {
		fmt.Fprintln(os.Stderr, "usage: pulumi-language-python [flags] ENGINE_ADDRESS")
		os.Exit(2)
	}

	self, err := os.Executable()
	if err != nil {
		fatal(err)
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	stopOnInterrupt()
	h := &host{
		engineAddress: engine,
		execScript:    filepath.Join(filepath.Dir(self), "pulumi-language-python-exec"),
	}
	if _, err := os.Stat(h.execScript); err != nil {
		fatal(fmt.Errorf("helper script missing: %w", err))
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fatal(err)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fatal(err)
	}
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

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
	os.Exit(1)
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// The engine asks for the program's plugins or packages before its refresh: the program's
// interpreter starts now, in parallel with the refresh (warm.go).
func (h *host) GetRequiredPlugins(_ context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	h.warm.start(req.GetInfo())
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(_ context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	h.warm.start(req.GetInfo())
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) GetProgramDependencies(context.Context, *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	return &pulumirpc.GetProgramDependenciesResponse{}, nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	srv grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	// Dependencies are installed by the project's `make setup`, not by pulumi.
	return nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) About(_ context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	py, _ := pythonCommand(req.GetInfo())
	out, err := exec.Command(py, "--version").Output()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "running %s --version: %v", py, err)
	}
	return &pulumirpc.AboutResponse{
		Executable: py,
		Version:    strings.TrimPrefix(strings.TrimSpace(string(out)), "Python "),
	}, nil
}

// Cancel does not signal the program: the engine cancels after it has reported why (a resource
// failed, the user pressed Ctrl-C, which the terminal already sent to the program), and stops
// its resource monitor, so the program's next call ends it. A SIGINT here only made Python
// print a KeyboardInterrupt traceback from inside its executor's shutdown.
func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// pythonCommand picks the interpreter: the `virtualenv` runtime option of
// Pulumi.yaml (relative to the project root), else $PULUMI_PYTHON_CMD, else
// python3. It also returns the virtualenv directory ("" if none).
func pythonCommand(info *pulumirpc.ProgramInfo) (string, string) {
	if info != nil && info.GetOptions() != nil {
		if v, ok := info.GetOptions().AsMap()["virtualenv"].(string); ok && v != "" {
			if !filepath.IsAbs(v) {
				v = filepath.Join(info.GetRootDirectory(), v)
			}
			if _, err := os.Stat(filepath.Join(v, "bin", "python")); err == nil {
				return filepath.Join(v, "bin", "python"), v
			}
		}
	}
	if py := os.Getenv("PULUMI_PYTHON_CMD"); py != "" {
		return py, ""
	}
	return "python3", ""
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	py, venv := pythonCommand(info)

	program := req.GetProgram()
	if info != nil && info.GetProgramDirectory() != "" {
		program = filepath.Join(info.GetProgramDirectory(), info.GetEntryPoint())
	}
	pwd := req.GetPwd()
	if pwd == "" && info != nil {
		pwd = info.GetProgramDirectory()
	}

	args := []string{h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", pwd,
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
	}
	if req.GetOrganization() != "" {
		args = append(args, "--organization", req.GetOrganization())
	}
	if info != nil && info.GetRootDirectory() != "" {
		args = append(args, "--root_directory", info.GetRootDirectory())
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	// {} rather than null when the stack has no config at all: the SDK iterates over it
	// (pulumi.runtime.set_all_config), as it does over the secret keys below.
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	// [] rather than null when the stack has no secrets: the SDK iterates over it
	secretKeys, err := json.Marshal(append([]string{}, req.GetConfigSecretKeys()...))
	if err != nil {
		return nil, err
	}

	var cmd *exec.Cmd
	var stdout, stderr *shutdownFilter
	if w := h.warm.take(py); w != nil {
		cmd, stdout, stderr = w.cmd, w.stdout, w.stderr
		if err := w.run(args, pwd, map[string]string{
			"PULUMI_CONFIG":             string(config),
			"PULUMI_CONFIG_SECRET_KEYS": string(secretKeys),
		}); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			cmd = nil
		}
	}
	if cmd == nil {
		cmd = exec.Command(py, append([]string{"-u", "-c", quietShutdown}, args...)...)
		cmd.Dir = pwd
		stdout, stderr = newShutdownFilter(os.Stdout), newShutdownFilter(os.Stderr)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		// The program ends with its host: the engine stops plugins it no longer needs.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		cmd.Env = append(programEnv(venv),
			"PULUMI_CONFIG="+string(config),
			"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys),
		)
		if err := cmd.Start(); err != nil {
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("starting %s: %v", py, err)}, nil
		}
	}
	err = cmd.Wait()
	stdout.finish()
	stderr.finish()

	if err == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if exitErr.ExitCode() == userActionableExit {
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("python program exited with code %d", exitErr.ExitCode()),
		}, nil
	}
	return &pulumirpc.RunResponse{Error: err.Error()}, nil
}
