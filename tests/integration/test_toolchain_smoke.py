"""The real engine, the pinned language host and plugins, offline: preview, up, refresh, destroy.

A throwaway project with a ``command.local.Command``, a ``proxmoxve.Provider`` instance and a
Python dynamic resource, run through the Automation API with the project's toolchain.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pulumi import automation as auto

from tests.integration.engine import ROOT, cli, engine_env, workspace_options

VERSIONS = dict(line.split("=", 1) for line in (ROOT / "tools" / "versions.env").read_text().splitlines() if re.match(r"^[A-Z_]+=", line))

PROGRAM = """
import pulumi
import pulumi_proxmoxve as proxmoxve
from pulumi.dynamic import CreateResult, ReadResult, Resource, ResourceProvider
from pulumi_command import local

from smoke_provider import Counter

hello = local.Command("hello", create="echo hello from the engine")
pve = proxmoxve.Provider("pve", endpoint="https://127.0.0.1:8006", api_token=pulumi.Output.secret("root@pam!smoke=00000000-0000-0000-0000-000000000000"), insecure=False)
counter = Counter("counter", 41)
pulumi.export("stdout", hello.stdout)
pulumi.export("value", counter.value)
"""

PROVIDER = """
from pulumi.dynamic import CreateResult, ReadResult, Resource, ResourceProvider


class CounterProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_="counter", outs={"value": props["start"] + 1, "start": props["start"]})

    def read(self, id_, props):
        return ReadResult(id_=id_, outs=props)


class Counter(Resource):
    def __init__(self, name, start):
        super().__init__(CounterProvider(), name, {"start": start, "value": None})
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("smoke")
    (work / "Pulumi.yaml").write_text(
        textwrap.dedent(f"""\
        name: smoke
        runtime:
          name: python
          options:
            toolchain: pip
            virtualenv: {ROOT / ".venv"}
        """)
    )
    (work / "__main__.py").write_text(PROGRAM)
    (work / "smoke_provider.py").write_text(PROVIDER)
    return work


def test_pulumi_version_is_the_pin(tmp_path: Path) -> None:
    env = engine_env(tmp_path / "state")
    out = cli(env, "version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == VERSIONS["PULUMI_CLI_VERSION"]


def test_plugins_are_the_pins(tmp_path: Path) -> None:
    env = engine_env(tmp_path / "state")
    out = cli(env, "plugin", "ls")
    assert out.returncode == 0, out.stderr
    assert re.search(rf"^command\s+resource\s+{re.escape(VERSIONS['COMMAND_VERSION'])}\b", out.stdout, re.M), out.stdout
    assert re.search(rf"^proxmoxve\s+resource\s+{re.escape(VERSIONS['PROXMOXVE_VERSION'])}\b", out.stdout, re.M), out.stdout


def test_preview_up_refresh_destroy_offline(project: Path, tmp_path: Path) -> None:
    env = engine_env(tmp_path / "state")
    stack = auto.create_or_select_stack("smoke", work_dir=str(project), opts=workspace_options(env, project))
    try:
        preview = stack.preview()
        assert preview.change_summary.get("create") == 4, preview.change_summary
        up = stack.up()
        assert up.outputs["stdout"].value == "hello from the engine"
        assert up.outputs["value"].value == 42
        refresh = stack.refresh()
        assert refresh.summary.result == "succeeded"
        again = stack.preview()
        assert set(again.change_summary) == {"same"}, again.change_summary
        destroy = stack.destroy()
        assert destroy.summary.result == "succeeded"
    finally:
        stack.workspace.remove_stack("smoke", force=True)
