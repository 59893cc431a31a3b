package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"
)

// seen is what a program found when it ran: written by the stand-in exec script below.
type seen struct {
	Argv    []string `json:"argv"`
	Cwd     string   `json:"cwd"`
	Config  string   `json:"config"`
	Secrets string   `json:"secrets"`
	Venv    string   `json:"venv"`
	Path0   string   `json:"path0"`
	SDK     bool     `json:"sdk"`
	// the preloaded module: imported before Run, so before the config was in its environment
	Preloaded       bool `json:"preloaded"`
	PreloadedConfig bool `json:"preloaded_config"`
	Broken          bool `json:"broken"`
}

// standIn replaces the SDK's exec script: it records what the program would see, then exits
// with the code the test asks for.
const standIn = `import json, os, sys
with open(os.environ["WARM_TEST_OUT"], "w") as out:
    json.dump({"argv": sys.argv, "cwd": os.getcwd(), "config": os.environ.get("PULUMI_CONFIG"),
               "secrets": os.environ.get("PULUMI_CONFIG_SECRET_KEYS"), "venv": os.environ.get("VIRTUAL_ENV"),
               "path0": sys.path[0], "sdk": "pulumi.runtime" in sys.modules,
               "preloaded": "early" in sys.modules, "broken": "broken" in sys.modules,
               "preloaded_config": getattr(sys.modules.get("early"), "CONFIG", None) is not None}, out)
sys.exit(int(os.environ.get("WARM_TEST_EXIT", "0")))
`

func runOnce(t *testing.T, warm bool, exit string) (seen, *pulumirpc.RunResponse) {
	t.Helper()
	venv, err := filepath.Abs("../../.venv") // make setup's virtualenv, with the pulumi SDK
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(venv, "bin", "python")); err != nil {
		t.Fatalf("the project's virtualenv is needed (make setup): %v", err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "exec.py")
	if err := os.WriteFile(script, []byte(standIn), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, source := range map[string]string{
		"early.py":  "import os\nCONFIG = os.environ.get('PULUMI_CONFIG')\n",
		"broken.py": "raise RuntimeError('a module that fails to import')\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(source), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "seen.json")
	t.Setenv("WARM_TEST_OUT", out)
	t.Setenv("WARM_TEST_EXIT", exit)
	options, err := structpb.NewStruct(map[string]any{"virtualenv": venv, "preload": []any{"early", "broken", 42}})
	if err != nil {
		t.Fatal(err)
	}
	info := &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, EntryPoint: ".", Options: options}
	h := &host{engineAddress: "127.0.0.1:1", execScript: script}
	if warm {
		if _, err := h.GetRequiredPackages(context.Background(), &pulumirpc.GetRequiredPackagesRequest{Info: info}); err != nil {
			t.Fatal(err)
		}
		if h.warm.waiting == nil {
			t.Fatal("GetRequiredPackages started no interpreter")
		}
	}
	resp, err := h.Run(context.Background(), &pulumirpc.RunRequest{
		Info: info, MonitorAddress: "127.0.0.1:2", Project: "p", Stack: "s", Pwd: dir, DryRun: true, Parallel: 4,
		Config: map[string]string{"p:token": "s3cret"}, ConfigSecretKeys: []string{"p:token"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.warm.waiting != nil {
		t.Error("the waiting interpreter was not used")
	}
	var got seen
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the program did not run: %v (%v)", err, resp)
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	got.Argv[0] = filepath.Base(got.Argv[0])
	return got, resp
}

// A program started ahead of Run sees what a cold start sees: its arguments, working directory,
// config (in the environment, as the SDK reads it), virtualenv and import path.
func TestWarmStartRunsAsCold(t *testing.T) {
	cold, coldResp := runOnce(t, false, "0")
	warm, warmResp := runOnce(t, true, "0")
	for i := range cold.Argv { // the temporary directories differ; the shapes must not
		if cold.Argv[i] == cold.Cwd {
			cold.Argv[i], warm.Argv[i] = "DIR", "DIR"
		}
	}
	cold.Cwd, warm.Cwd = "", ""
	// warm, the `preload` modules were imported before Run, the config not yet in place; one that
	// fails to import is left for the program to import (and fail) itself
	if !warm.Preloaded || warm.PreloadedConfig || warm.Broken || cold.Preloaded {
		t.Errorf("preload: warm %+v, cold %+v", warm, cold)
	}
	warm.Preloaded = false
	if !reflect.DeepEqual(cold, warm) {
		t.Errorf("warm start differs from cold:\ncold %+v\nwarm %+v", cold, warm)
	}
	if warm.Config != `{"p:token":"s3cret"}` || warm.Secrets != `["p:token"]` || !warm.SDK {
		t.Errorf("config or SDK not in place: %+v", warm)
	}
	if coldResp.GetError() != "" || warmResp.GetError() != "" {
		t.Errorf("errors: cold %q, warm %q", coldResp.GetError(), warmResp.GetError())
	}
}

// The exit code that tells the engine the program already reported its error reaches it warm too.
func TestWarmStartUserActionableExit(t *testing.T) {
	_, resp := runOnce(t, true, "32")
	if !resp.GetBail() {
		t.Errorf("exit 32 should bail, got %+v", resp)
	}
	_, resp = runOnce(t, true, "3")
	if resp.GetError() != "python program exited with code 3" {
		t.Errorf("exit 3: got %+v", resp)
	}
}
