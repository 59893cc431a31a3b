package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	codegenrpc "github.com/pulumi/pulumi/sdk/v3/proto/go/codegen"
	"google.golang.org/grpc"
)

// A program with no package: the request names no loader, and none is needed.
func TestGenerateProgramConfigAndOutput(t *testing.T) {
	resp, err := (&host{}).GenerateProgram(context.Background(), &pulumirpc.GenerateProgramRequest{
		Source: map[string]string{"main.pp": `
config greeting "string" {
  default = "hello"
}
config replicas "int" {
}

output message {
  value = "${greeting}, world"
}
output doubled {
  value = replicas * 2
}
`},
		Strict: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range resp.GetDiagnostics() {
		t.Errorf("diagnostic: %v: %s %s", d.GetSeverity(), d.GetSummary(), d.GetDetail())
	}
	main := string(resp.GetSource()["__main__.py"])
	t.Logf("__main__.py:\n%s", main)
	for _, want := range []string{
		"import pulumi\n",
		"config = pulumi.Config()\n",
		`greeting = config.get("greeting")`,
		`greeting = "hello"`,
		`replicas = config.require_int("replicas")`,
		`pulumi.export("message", f"{greeting}, world")`,
		`pulumi.export("doubled", replicas * 2)`,
	} {
		if !strings.Contains(main, want) {
			t.Errorf("__main__.py lacks %q", want)
		}
	}
}

// Errors in the PCL come back as diagnostics, with no code.
func TestGenerateProgramDiagnostics(t *testing.T) {
	resp, err := (&host{}).GenerateProgram(context.Background(), &pulumirpc.GenerateProgramRequest{
		Source: map[string]string{"main.pp": `output broken { value = nosuchvariable }` + "\n"},
		Strict: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSource()) != 0 {
		t.Errorf("expected no code, got %v", resp.GetSource())
	}
	found := false
	for _, d := range resp.GetDiagnostics() {
		if d.GetSeverity() == codegenrpc.DiagnosticSeverity_DIAG_ERROR && strings.Contains(d.GetSummary(), "nosuchvariable") {
			found = true
		}
	}
	if !found {
		t.Errorf("expected an error naming nosuchvariable, got %v", resp.GetDiagnostics())
	}
}

// What `pulumi import` sends: a resource of a provider package, whose schema comes from the
// engine's loader service at LoaderTarget (served here by the same LoaderServer the engine uses,
// over a small stand-in schema with the two properties used).
func TestGenerateProgramImportedResource(t *testing.T) {
	target := serveLoader(t, schema.PackageSpec{
		Name:    "proxmoxve",
		Version: "8.3.0",
		Meta:    &schema.MetadataSpec{ModuleFormat: "(.*)(?:/[^/]*)"},
		Resources: map[string]schema.ResourceSpec{
			"proxmoxve:index/vmLegacy:VmLegacy": {
				ObjectTypeSpec: schema.ObjectTypeSpec{Type: "object", Properties: map[string]schema.PropertySpec{
					"nodeName": {TypeSpec: schema.TypeSpec{Type: "string"}},
					"vmId":     {TypeSpec: schema.TypeSpec{Type: "integer"}},
				}},
				InputProperties: map[string]schema.PropertySpec{
					"nodeName": {TypeSpec: schema.TypeSpec{Type: "string"}},
					"vmId":     {TypeSpec: schema.TypeSpec{Type: "integer"}},
				},
				RequiredInputs: []string{"nodeName"},
			},
		},
	})
	resp, err := (&host{}).GenerateProgram(context.Background(), &pulumirpc.GenerateProgramRequest{
		Source: map[string]string{"anonymous.pp": `resource vm410 "proxmoxve:index/vmLegacy:VmLegacy" {
    __logicalName = "vm410"
    nodeName = "pve-node1"
    vmId = 410

    options {
        protect = true
    }
}
`},
		LoaderTarget: target,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range resp.GetDiagnostics() {
		t.Errorf("diagnostic: %v: %s %s", d.GetSeverity(), d.GetSummary(), d.GetDetail())
	}
	main := string(resp.GetSource()["__main__.py"])
	t.Logf("__main__.py:\n%s", main)
	for _, want := range []string{
		"import pulumi_proxmoxve as proxmoxve\n",
		`vm410 = proxmoxve.VmLegacy("vm410",`,
		`node_name="pve-node1"`,
		`vm_id=410`,
		`protect=True`,
	} {
		if !strings.Contains(main, want) {
			t.Errorf("__main__.py lacks %q", want)
		}
	}
}

// serveLoader serves a codegen Loader (schema.NewLoaderServer, as the engine does) for one
// package on a loopback port and returns its address.
func serveLoader(t *testing.T, spec schema.PackageSpec) string {
	t.Helper()
	pkg, err := schema.ImportSpec(spec, nil, schema.NewNullLoader(), schema.ValidationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	codegenrpc.RegisterLoaderServer(srv, schema.NewLoaderServer(onePackage{pkg}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

type onePackage struct{ pkg *schema.Package }

func (l onePackage) LoadPackage(name string, v *semver.Version) (*schema.Package, error) {
	return l.LoadPackageV2(context.Background(), &schema.PackageDescriptor{Name: name, Version: v})
}

func (l onePackage) LoadPackageV2(ctx context.Context, d *schema.PackageDescriptor) (*schema.Package, error) {
	ref, err := l.LoadPackageReferenceV2(ctx, d)
	if err != nil {
		return nil, err
	}
	return ref.Definition()
}

func (l onePackage) LoadPackageReference(name string, v *semver.Version) (schema.PackageReference, error) {
	return l.LoadPackageReferenceV2(context.Background(), &schema.PackageDescriptor{Name: name, Version: v})
}

func (l onePackage) LoadPackageReferenceV2(_ context.Context, d *schema.PackageDescriptor,
) (schema.PackageReference, error) {
	if d.Name != l.pkg.Name {
		return nil, &unknownPackage{d.Name}
	}
	return l.pkg.Reference(), nil
}

type unknownPackage struct{ name string }

func (e *unknownPackage) Error() string { return "unknown package " + e.name }
