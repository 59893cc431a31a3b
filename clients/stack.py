"""A Pulumi stack as verify and the drill read it, without the program: its outputs and secrets
through the CLI (``pulumi stack output``, ``pulumi config get``), its ``Pulumi.<stack>.yaml``, or the
files and variables an operator gives instead (``--stack-outputs``, ``--token-file``, ``--token-env``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

PROJECT = "pve-ceph-ha"


class SourceError(Exception):
    """A stack, or what stands in for it, cannot be read; the message says what to give instead."""


def pulumi_cli(args: list[str], cwd: Path, what: str) -> str:
    try:
        run = subprocess.run(["pulumi", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SourceError(f"{what}: the pulumi CLI is not on PATH (or give --stack-outputs FILE and --token-file)") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: `pulumi {' '.join(args)}` did not answer within 120 s") from None
    if run.returncode != 0:
        raise SourceError(f"{what}: `pulumi {' '.join(args)}` failed: {run.stderr.strip()[-400:]}")
    return run.stdout


def read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise SourceError(f"{what} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SourceError(f"{what} {path}: not JSON ({exc})") from None


def read_stack_config(path: Path) -> dict[str, Any]:
    """The plain values of a ``Pulumi.<stack>.yaml`` under the project's namespace (secrets stay encrypted)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SourceError(f"stack config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SourceError(f"stack config {path}: not YAML ({exc})") from None
    config = data.get("config") or {}
    return {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith(f"{PROJECT}:")}


def token(args: argparse.Namespace, lab_pve: dict[str, Any], stack: str | None, project_dir: Path) -> str:
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise SourceError(f"--token-file {args.token_file}: {exc.strerror}") from None
    if args.token_env:
        value = os.environ.get(args.token_env, "").strip()
        if not value:
            raise SourceError(f"--token-env {args.token_env}: the variable is not set or empty")
        return value
    if lab_pve.get("token_id") and lab_pve.get("token_secret"):
        return f"{lab_pve['token_id']}={lab_pve['token_secret']}"
    if stack:
        return pulumi_cli(["config", "get", f"{PROJECT}:proxmoxApiToken", "-s", stack], project_dir, f"stack {stack}").strip()
    raise SourceError("no API token: give --token-file FILE or --token-env VAR (root@pam!drill=<uuid>), or --stack STACK")
