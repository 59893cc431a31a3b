package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/blang/semver"

	"github.com/pulumi/pulumi/pkg/v3/codegen/hcl2/syntax"
	"github.com/pulumi/pulumi/pkg/v3/codegen/pcl"
	"github.com/pulumi/pulumi/pkg/v3/codegen/python"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// GenerateProgram turns a PCL program (what `pulumi import` and `pulumi convert` hand to the
// language host) into Python, with the same code generator the official host uses
// (pkg/v3/codegen/python, at the CLI's version). Package schemas come from the engine's
// loader service at req.LoaderTarget; a program that references no package never calls it.
//
// Errors in the PCL are reported as diagnostics (the CLI prints them), not as an RPC error.
func (h *host) GenerateProgram(_ context.Context, req *pulumirpc.GenerateProgramRequest,
) (*pulumirpc.GenerateProgramResponse, error) {
	var loader schema.Loader = noLoader{}
	if target := req.GetLoaderTarget(); target != "" {
		client, err := schema.NewLoaderClient(target)
		if err != nil {
			return nil, fmt.Errorf("connecting to the schema loader at %s: %w", target, err)
		}
		defer client.Close()
		loader = schema.NewCachedLoader(client)
	}
	return generateProgram(req.GetSource(), loader, req.GetStrict())
}

// generateProgram parses, binds and generates; split from the RPC so that tests can pass
// their own loader.
func generateProgram(source map[string]string, loader schema.Loader, strict bool,
) (*pulumirpc.GenerateProgramResponse, error) {
	// Parse in a stable order (the binder sorts the files by name anyway).
	names := make([]string, 0, len(source))
	for name := range source {
		names = append(names, name)
	}
	sort.Strings(names)

	parser := syntax.NewParser()
	for _, name := range names {
		if err := parser.ParseFile(strings.NewReader(source[name]), name); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", name, err)
		}
	}
	rpcDiags := plugin.HclDiagnosticsToRPCDiagnostics(parser.Diagnostics)
	if parser.Diagnostics.HasErrors() {
		return &pulumirpc.GenerateProgramResponse{Diagnostics: rpcDiags}, nil
	}

	var opts []pcl.BindOption
	if !strict {
		opts = append(opts, pcl.NonStrictBindOptions()...)
	}
	// With errors in the program, the binder returns them both as diagnostics and as its error.
	program, diags, err := pcl.BindProgram(parser.Files, loader, opts...)
	rpcDiags = append(rpcDiags, plugin.HclDiagnosticsToRPCDiagnostics(diags)...)
	if diags.HasErrors() {
		return &pulumirpc.GenerateProgramResponse{Diagnostics: rpcDiags}, nil
	}
	if err != nil {
		return nil, err
	}
	if program == nil {
		return nil, errors.New("internal error: binding returned no program")
	}

	files, genDiags, err := python.GenerateProgram(program)
	if err != nil {
		return nil, err
	}
	rpcDiags = append(rpcDiags, plugin.HclDiagnosticsToRPCDiagnostics(genDiags)...)
	return &pulumirpc.GenerateProgramResponse{Source: files, Diagnostics: rpcDiags}, nil
}

// noLoader stands in when the request names no loader service (the engine always names one):
// a program that references a package gets an error diagnostic instead of a crash.
type noLoader struct{}

func (noLoader) LoadPackage(pkg string, version *semver.Version) (*schema.Package, error) {
	return noLoader{}.LoadPackageV2(context.Background(), &schema.PackageDescriptor{Name: pkg, Version: version})
}

func (noLoader) LoadPackageV2(_ context.Context, d *schema.PackageDescriptor) (*schema.Package, error) {
	return nil, fmt.Errorf("cannot load the schema of package %q: the request names no schema loader", d.Name)
}
