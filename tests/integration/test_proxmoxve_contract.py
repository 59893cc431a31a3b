"""The `proxmoxve` plugin built here (tools/proxmoxve) against the pinned pulumi-proxmoxve SDK.

The engine finds a resource's implementation by its type token and hands the plugin the SDK's
property names: if the plugin's schema and the installed SDK drift apart (a new SDK pin, a new
bpg or bridge version, a change in our token rule), resources would fail at run time with
"unknown resource type" or silently drop properties. This test fails first, naming what differs.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pulumi_proxmoxve
import pytest
from pulumi._types import input_type_py_to_pulumi_names

from lab.testing.engine import cli, engine_env, versions

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

VERSIONS = versions()
SDK = Path(pulumi_proxmoxve.__file__).parent
PROVIDER_TOKEN = "pulumi:providers:proxmoxve"


@cache
def schema() -> dict[str, Any]:
    env = engine_env(Path(tempfile.mkdtemp(prefix="contract-")))
    out = cli(env, "package", "get-schema", f"proxmoxve@{VERSIONS['PROXMOXVE_VERSION']}")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sdk_resources() -> dict[str, type]:
    """Every resource class of the SDK by its type token (the string its __init__ passes up)."""
    found: dict[str, type] = {}
    for path in sorted(SDK.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {ast.unparse(b) for b in node.bases}
            if not bases & {"pulumi.CustomResource", "pulumi.ProviderResource"}:
                continue
            tokens = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str) and re.match(r"^proxmoxve(:|$)", c.value)}
            token = PROVIDER_TOKEN if "pulumi.ProviderResource" in bases else tokens.pop()
            module = ".".join(("pulumi_proxmoxve", *path.relative_to(SDK).with_suffix("").parts)).removesuffix(".__init__")
            found[token] = getattr(importlib.import_module(module), node.name)
    return found


def sdk_functions() -> set[str]:
    """Every function token the SDK invokes."""
    pattern = re.compile(r"pulumi\.runtime\.invoke(?:_output)?\('(proxmoxve:[^']+)'")
    return {m for path in SDK.rglob("*.py") for m in pattern.findall(path.read_text(encoding="utf-8"))}


def sdk_inputs(cls: type) -> set[str]:
    args = getattr(importlib.import_module(cls.__module__), f"{cls.__name__}Args")
    return set(input_type_py_to_pulumi_names(args).values())


def test_every_sdk_token_is_in_the_plugins_schema() -> None:
    resources, functions = sdk_resources(), sdk_functions()
    served = schema()
    print(f"\n  SDK pulumi-proxmoxve ({VERSIONS['PROXMOXVE_VERSION']}): {len(resources) - 1} resources, {len(functions)} functions")
    print(f"  plugin schema {served['version']}: {len(served['resources'])} resources, {len(served['functions'])} functions")
    missing = sorted(t for t in resources if t != PROVIDER_TOKEN and t not in served["resources"])
    missing += sorted(t for t in functions if t not in served["functions"])
    assert not missing, f"tokens the SDK uses and the plugin does not serve: {missing}"
    assert served["version"] == VERSIONS["PROXMOXVE_VERSION"]


@pytest.mark.parametrize("name", ["VmLegacy", "Haresource", "Hagroup", "Harule", "Provider"])
def test_the_programs_resources_have_the_sdks_inputs(name: str) -> None:
    cls = getattr(pulumi_proxmoxve, name)
    token = next(t for t, c in sdk_resources().items() if c is cls)
    served = schema()["provider"] if token == PROVIDER_TOKEN else schema()["resources"][token]
    inputs = sdk_inputs(cls)
    print(f"\n  {name}: {len(inputs)} inputs")
    assert inputs == set(served.get("inputProperties", {}))


def test_every_resource_has_the_sdks_input_names() -> None:
    served = schema()
    differ = {}
    for token, cls in sdk_resources().items():
        spec = served["provider"] if token == PROVIDER_TOKEN else served["resources"].get(token, {})
        want, got = sdk_inputs(cls), set(spec.get("inputProperties", {}))
        if want != got:
            differ[token] = {"sdk only": sorted(want - got), "plugin only": sorted(got - want)}
    counts = {n: len(sdk_inputs(getattr(pulumi_proxmoxve, n))) for n in ("VmLegacy", "Haresource", "Hagroup", "Harule", "Provider")}
    print(f"\n  inputs: {counts}")
    assert not differ, json.dumps(differ, indent=1)


def test_the_sdk_is_the_pinned_one() -> None:
    meta = json.loads((SDK / "pulumi-plugin.json").read_text())
    assert meta["name"] == "proxmoxve"
    assert meta["version"] == VERSIONS["PROXMOXVE_VERSION"], "requirements.txt's pulumi-proxmoxve and tools/versions.env disagree"
