"""The lab stack's config: ``lab/stack.yaml`` (tracked, no secret) to ``Pulumi.lab.yaml`` (ignored by git).

Pulumi writes into a stack's config file what it keeps for the stack: the passphrase salt when the
stack is made, each secret encrypted with it. Were the lab stack's file tracked, every `make demo`
would leave the tree dirty, and a newcomer's next `git pull` would conflict (issue #24). So the
tracked config is ``lab/stack.yaml``, and `make demo` writes ``Pulumi.lab.yaml`` from it before each
run, keeping the salt and the encrypted values Pulumi stored there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.paths import ROOT

TEMPLATE = Path(__file__).resolve().with_name("stack.yaml")
# what Pulumi's secrets managers keep in a stack's config file (pkg/v3 workspace.ProjectStack)
SECRETS_STATE = ("secretsprovider", "encryptedkey", "encryptionsalt")
HEADER = "# Written by `make demo` from lab/stack.yaml (edit that file): the lab stack's config, its salt and secrets.\n"


def template() -> dict[str, Any]:
    """``lab/stack.yaml`` as Pulumi reads it: ``{"config": {...}}``."""
    return dict(yaml.safe_load(TEMPLATE.read_text(encoding="utf-8")))


def write(project: Path = ROOT) -> Path:
    """``project/Pulumi.lab.yaml``: the template's config, with the encrypted values and the salt already there."""
    target = project / "Pulumi.lab.yaml"
    old: dict[str, Any] = (yaml.safe_load(target.read_text(encoding="utf-8")) or {}) if target.exists() else {}
    new = template()
    secrets = {key: value for key, value in (old.get("config") or {}).items() if isinstance(value, dict) and "secure" in value}
    new["config"] = {**new["config"], **secrets}
    new.update({key: old[key] for key in SECRETS_STATE if old.get(key)})
    text = HEADER + yaml.safe_dump(new, sort_keys=False, default_flow_style=False)
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    return target
