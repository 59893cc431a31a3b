"""The lab stack's config file: `make demo` writes Pulumi.lab.yaml from lab/stack.yaml, keeping what
Pulumi stored in it (the salt, the encrypted token), so the tracked tree stays clean (issue #24)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from lab import stack_config
from lab.paths import ROOT


def test_the_template_holds_no_secret() -> None:
    text = stack_config.TEMPLATE.read_text(encoding="utf-8")
    assert "secure:" not in text and "encryptionsalt" not in text
    assert "pve-ceph-ha:proxmox" in stack_config.template()["config"]


def test_the_written_file_is_the_template_plus_what_pulumi_keeps(tmp_path: Path) -> None:
    first = yaml.safe_load(stack_config.write(tmp_path).read_text())
    assert first == stack_config.template()
    # what `pulumi stack init` and `pulumi config set --secret` write into the file
    first["encryptionsalt"] = "v1:c2FsdA==:v1:abc:def"
    first["config"]["pve-ceph-ha:proxmoxApiToken"] = {"secure": "v1:abc:def"}
    first["config"]["pve-ceph-ha:ha"]["maxRestart"] = 9  # an edit of the generated file: the template wins
    (tmp_path / "Pulumi.lab.yaml").write_text(yaml.safe_dump(first))
    again = yaml.safe_load(stack_config.write(tmp_path).read_text())
    assert again["encryptionsalt"] == "v1:c2FsdA==:v1:abc:def"
    assert again["config"]["pve-ceph-ha:proxmoxApiToken"] == {"secure": "v1:abc:def"}
    assert again["config"]["pve-ceph-ha:ha"] == stack_config.template()["config"]["pve-ceph-ha:ha"]
    before = (tmp_path / "Pulumi.lab.yaml").stat().st_mtime_ns
    stack_config.write(tmp_path)
    assert (tmp_path / "Pulumi.lab.yaml").stat().st_mtime_ns == before  # unchanged: not rewritten


def test_git_ignores_the_written_file() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "Pulumi.lab.yaml"], cwd=ROOT, check=False)
    assert ignored.returncode == 0
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "Pulumi.lab.yaml"], cwd=ROOT, capture_output=True, check=False)
    assert tracked.returncode != 0
