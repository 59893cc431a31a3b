"""The real engine and the project's language host, offline: preview, up, refresh, destroy.

A throwaway project with a Python dynamic resource and a secret config value, run through the
Automation API with the project's toolchain. The ``proxmoxve`` plugin built here has its own
smoke test against the lab (test_proxmoxve_smoke.py) and its contract test against the SDK
(test_proxmoxve_contract.py).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pulumi import automation as auto

from lab.testing.engine import ROOT, cli, engine_env, versions, workspace_options

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

VERSIONS = versions()


PROGRAM = """
import pulumi

from smoke_provider import Counter

config = pulumi.Config()
counter = Counter("counter", config.require_int("start"))
pulumi.export("value", counter.value)
pulumi.export("token", config.require_secret("token"))
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


def test_automatic_plugin_acquisition_is_off(tmp_path: Path) -> None:
    env = engine_env(tmp_path / "state")
    assert env.get("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION") == "true" or (ROOT / ".tools" / "mode").read_text().strip() == "system"


def test_the_proxmoxve_plugin_is_the_pin(tmp_path: Path) -> None:
    env = engine_env(tmp_path / "state")
    out = cli(env, "plugin", "ls")
    assert out.returncode == 0, out.stderr
    assert re.search(rf"^proxmoxve\s+resource\s+{re.escape(VERSIONS['PROXMOXVE_VERSION'])}\b", out.stdout, re.M), out.stdout


def test_preview_up_refresh_destroy_offline(project: Path, tmp_path: Path) -> None:
    env = engine_env(tmp_path / "state")
    stack = auto.create_or_select_stack("smoke", work_dir=str(project), opts=workspace_options(env, project))
    stack.set_config("start", auto.ConfigValue("41"))
    stack.set_config("token", auto.ConfigValue("smoke-secret-value", secret=True))
    try:
        preview = stack.preview()
        assert preview.change_summary.get("create") == 2, preview.change_summary
        up = stack.up()
        assert up.outputs["value"].value == 42
        assert up.outputs["token"].secret
        exported = cli(env, "stack", "export", "--stack", "smoke", cwd=project)
        assert exported.returncode == 0, exported.stderr
        assert "smoke-secret-value" not in exported.stdout
        assert '"ciphertext": "v1:' in exported.stdout
        refresh = stack.refresh()
        assert refresh.summary.result == "succeeded"
        again = stack.preview()
        assert set(again.change_summary) == {"same"}, again.change_summary
        destroy = stack.destroy()
        assert destroy.summary.result == "succeeded"
    finally:
        stack.workspace.remove_stack("smoke", force=True)
