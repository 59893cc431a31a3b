"""What `python -m verify` checks against: a stack's config (validated by the program's own model,
``components.config``), its secrets, the files its config points at, and its outputs.

- ``--stack STACK``: ``Pulumi.STACK.yaml`` in the project folder, the secrets through
  ``pulumi config get`` (``proxmoxApiToken``, ``sshPrivateKey`` when set) and
  ``pulumi stack output --json``, the way ``python -m drill`` reads a stack;
- ``--stack-config FILE`` (and optionally ``--stack-outputs FILE``): the same without the
  Pulumi CLI, the token from ``--token-env VAR`` or ``--token-file FILE``.

Paths in the config (``ssh.privateKeyFile``, ``ssh.knownHostsFile``, ``proxmox.caFile``) are
relative to the folder of the config file, as they are for ``pulumi up`` run there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.stack import SourceError, pulumi_cli, read_json, read_stack_config, token
from components import config as stack_config
from components import credentials
from components.config import PROJECT, ConfigError, StackConfig
from components.credentials import Credentials


class TargetError(Exception):
    """verify cannot run: the message says which input is missing or wrong, and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class Target:
    config: StackConfig = field(repr=False)
    credentials: Credentials = field(repr=False)
    outputs: dict[str, Any] = field(default_factory=dict)
    stack: str | None = None

    @property
    def token(self) -> str:
        return self.config.proxmox_api_token.get_secret_value()


def _config_get(stack: str, key: str, project_dir: Path) -> str:
    return pulumi_cli(["config", "get", f"{PROJECT}:{key}", "-s", stack], project_dir, f"stack {stack}").rstrip("\n")


def load(args: argparse.Namespace) -> Target:
    """The stack to verify, or a :class:`TargetError` naming what to give."""
    project_dir = Path(args.project_dir or ".").resolve()
    if args.stack_config:
        config_file = Path(args.stack_config).resolve()
    elif args.stack:
        config_file = project_dir / f"Pulumi.{args.stack}.yaml"
    else:
        raise TargetError(["which stack? give --stack STACK (in the project folder) or --stack-config Pulumi.STACK.yaml"])
    if not config_file.is_file():
        raise TargetError([f"{config_file}: no such stack config file; run from the project folder or give --project-dir"])
    try:
        raw = read_stack_config(config_file)
        raw["proxmoxApiToken"] = token(args, {}, args.stack, project_dir)  # --token-file, --token-env or the stack's secret
        if "sshPrivateKey" in raw:  # encrypted in the file
            if not args.stack:
                raise TargetError([f"{PROJECT}:sshPrivateKey is a secret of the stack: give --stack STACK so that verify can read it"])
            raw["sshPrivateKey"] = _config_get(args.stack, "sshPrivateKey", project_dir)
        outputs: dict[str, Any] = {}
        if args.stack_outputs:
            outputs = read_json(args.stack_outputs, "--stack-outputs")
        elif args.stack:
            outputs = json.loads(pulumi_cli(["stack", "output", "--json", "-s", args.stack], project_dir, f"stack {args.stack}") or "{}")
            if not outputs:
                raise TargetError([f"stack {args.stack} has no outputs: it was never deployed; run `pulumi up -s {args.stack}` first"])
    except SourceError as exc:
        raise TargetError([str(exc)]) from None
    try:
        settings = stack_config.validate(raw)
        with contextlib.chdir(config_file.parent):  # the config's paths are relative to its folder
            secrets = credentials.load(settings)
    except ConfigError as exc:
        raise TargetError(exc.problems) from None
    return Target(settings, secrets, outputs, args.stack)
