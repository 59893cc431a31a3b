"""Running the real Pulumi engine from the tests: the project's toolchain, a local file backend."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from lab.paths import ROOT

TOOLS = ROOT / ".tools"
PASSPHRASE = "lab-only-passphrase"


def versions() -> dict[str, str]:
    """The toolchain pins, tools/versions.env (plain KEY=VALUE lines)."""
    lines = (ROOT / "tools" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))


def engine_env(state_dir: Path) -> dict[str, str]:
    """The environment every engine run gets: pinned toolchain first, no plugin downloads, local state."""
    env = dict(os.environ)
    mode = (TOOLS / "mode").read_text().strip() if (TOOLS / "mode").exists() else "local"
    if mode != "system":
        env["PATH"] = f"{TOOLS / 'bin'}:{env['PATH']}"
        env["PULUMI_HOME"] = str(TOOLS / "pulumi-home")
        env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    env["PULUMI_BACKEND_URL"] = f"file://{state_dir}"
    env["PULUMI_CONFIG_PASSPHRASE"] = PASSPHRASE
    env["PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK"] = "true"
    state_dir.mkdir(parents=True, exist_ok=True)
    return env


def pulumi_binary(env: dict[str, str]) -> str:
    found = shutil.which("pulumi", path=env["PATH"])
    if found is None:
        raise RuntimeError("no pulumi CLI: run `make setup` (tools/build-toolchain.sh builds it)")
    return found


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([pulumi_binary(env), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@functools.cache
def pulumi_command(root: str) -> object:
    """The Automation API's handle on the CLI under ROOT, made once a process: making one runs
    `pulumi version` (even with the version check skipped), a CLI start each test stack paid."""
    from pulumi import automation as auto

    return auto.PulumiCommand(root=root, skip_version_check=True)


def workspace_options(env: dict[str, str], work_dir: Path) -> object:
    """Automation API options that run the project's pulumi, not whatever the test process finds."""
    from pulumi import automation as auto

    root = Path(pulumi_binary(env)).parent.parent
    return auto.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        env_vars=env,
        pulumi_home=env.get("PULUMI_HOME"),
        pulumi_command=pulumi_command(str(root)),
    )
