"""The policy pack through the real Pulumi engine: ``pulumi policy analyze`` and ``pulumi preview``.

The engine starts the Python policy pack (``policy/``) through the Python language host's
``RunPlugin`` (tools/langhost/runplugin.go).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from lab.testing.engine import ROOT, engine_env, pulumi_binary

POLICY_DIR = ROOT / "policy"
TIMEOUT_S = 600


def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, str]:
    done = subprocess.run([pulumi_binary(env), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    return done.returncode, done.stdout + done.stderr


def state_file(resources: list[tuple[str, str, dict[str, Any]]], path: Path, project: str = "pve-ceph-ha", stack: str = "dev") -> Path:
    """A ``pulumi stack export`` document holding ``(type, name, properties)`` as inputs and outputs."""
    root = f"urn:pulumi:{stack}::{project}::pulumi:pulumi:Stack::{project}-{stack}"
    entries: list[dict[str, Any]] = [{"urn": root, "custom": False, "type": "pulumi:pulumi:Stack"}]
    for index, (type_, name, props) in enumerate(resources):
        urn = f"urn:pulumi:{stack}::{project}::{type_}::{name}"
        entries.append({"urn": urn, "custom": True, "id": f"id-{index}", "type": type_, "inputs": props, "outputs": props, "parent": root})
    deployment = {"manifest": {"time": "2026-01-01T00:00:00Z", "magic": "", "version": ""}, "resources": entries}
    path.write_text(json.dumps({"version": 3, "deployment": deployment}, indent=1))
    return path


def analyze(state: Path, env: dict[str, str], pack: str | None = None) -> tuple[int, str]:
    """``pulumi policy analyze --file``: the pack over a state file, no program and no provider."""
    return run(env, "policy", "analyze", "--file", str(state), "--policy-pack", pack or policy_pack(env))


def policy_pack(env: dict[str, str]) -> str:
    """The ``--policy-pack`` argument: the pack's folder, started by the language host."""
    return str(POLICY_DIR)


def preview_with_policy(stack_dir: Path, stack: str, env: dict[str, str]) -> tuple[bool, str]:
    """``pulumi preview`` of ``stack`` in ``stack_dir`` with the policy pack; (succeeded, output).

    A mandatory violation fails the preview; advisory ones are printed. ``env`` is the engine's
    environment (``lab.testing.engine.engine_env``): toolchain, backend, passphrase.
    """
    code, output = run(env, "preview", "--stack", stack, "--policy-pack", policy_pack(env), "--non-interactive", "--diff", cwd=stack_dir)
    return code == 0, output


def throwaway_project(where: Path, program: str, extra: dict[str, str] | None = None) -> Path:
    """A small Pulumi Python project in ``where`` running on the project's virtualenv."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "Pulumi.yaml").write_text(
        textwrap.dedent(f"""\
        name: policy-check
        runtime:
          name: python
          options:
            toolchain: pip
            virtualenv: {ROOT / ".venv"}
        """)
    )
    (where / "__main__.py").write_text(textwrap.dedent(program))
    for name, text in (extra or {}).items():
        (where / name).write_text(textwrap.dedent(text))
    return where


__all__ = ["POLICY_DIR", "analyze", "engine_env", "policy_pack", "preview_with_policy", "state_file", "throwaway_project"]
