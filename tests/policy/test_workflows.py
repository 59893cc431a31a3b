"""The GitHub workflows: actionlint passes, and they do what docs/operations.md's "Pull-request previews and deploys" says."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".tools" / "bin" / "actionlint"


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


def pulumi_step(stack_workflow: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in stack_workflow["jobs"]["pulumi"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@") and "command" in s.get("with", {})]
    return step


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """Installed by the project's own setup (tools/install-actionlint.sh; nothing is done when present)."""
    subprocess.run(["bash", str(ROOT / "tools" / "install-actionlint.sh")], check=True, capture_output=True, text=True, timeout=900)
    return ACTIONLINT


def test_actionlint_passes_on_every_workflow(actionlint: Path) -> None:
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert len(files) == 3
    done = subprocess.run([str(actionlint), *files], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_pull_request_previews_each_stack_with_refresh_the_policy_pack_and_a_comment() -> None:
    preview, stack = load("preview.yml"), load("pulumi-stack.yml")
    assert "pull_request" in preview["on"]
    assert preview["permissions"]["pull-requests"] == "write"
    job = preview["jobs"]["preview"]
    assert job["uses"] == "./.github/workflows/pulumi-stack.yml"
    assert "dev" in job["strategy"]["matrix"]["stack"]
    assert job["with"] == {"command": "preview", "stack": "${{ matrix.stack }}"}
    step = pulumi_step(stack)["with"]
    assert step["refresh"] is True and step["policyPacks"] == "policy"
    assert step["comment-on-pr"] == "${{ inputs.command == 'preview' }}"


def test_a_push_to_main_deploys_each_environment_in_turn_behind_its_github_environment() -> None:
    deploy = load("deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    jobs = list(deploy["jobs"].items())
    assert jobs[0][0] == "dev"
    groups = []
    for position, (name, job) in enumerate(jobs):
        assert job["with"] == {"command": "up", "stack": name, "environment": name}
        assert job["concurrency"]["cancel-in-progress"] is False
        groups.append(job["concurrency"]["group"])
        if position:
            assert job["needs"] == jobs[position - 1][0], f"{name} must wait for the previous environment"
    assert len(set(groups)) == len(groups) and all(name in group for (name, _), group in zip(jobs, groups, strict=True))
    assert load("pulumi-stack.yml")["jobs"]["pulumi"]["environment"] == "${{ inputs.environment }}"


def test_secrets_come_only_from_the_repositorys_secrets_and_reach_the_config_through_stdin() -> None:
    text = (WORKFLOWS / "pulumi-stack.yml").read_text()
    job = load("pulumi-stack.yml")["jobs"]["pulumi"]
    secret_env = {**job["env"], **next(s["env"] for s in job["steps"] if "proxmoxApiToken" in s.get("run", ""))}
    for name in ("PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "PROXMOX_API_TOKEN", "SSH_PRIVATE_KEY"):
        assert secret_env[name] == f"${{{{ secrets.{name} }}}}"
    assert re.search(r'printf .%s. "\$PROXMOX_API_TOKEN" \| pulumi config set --secret proxmoxApiToken', text)
    assert re.search(r'"\$SSH_PRIVATE_KEY" \| pulumi config set --secret sshPrivateKey', text)
    assert "secrets: inherit" in (WORKFLOWS / "preview.yml").read_text()


def test_the_cli_is_installed_by_the_official_action_at_the_pinned_sdk_version() -> None:
    steps = load("pulumi-stack.yml")["jobs"]["pulumi"]["steps"]
    installs = [s for s in steps if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert installs and all(s["with"]["pulumi-version"] == "${{ steps.pins.outputs.pulumi }}" for s in installs)
    pins = next(s for s in steps if s.get("id") == "pins")
    assert "PULUMI_SDK_VERSION" in pins["run"] and "tools/versions.env" in pins["run"]


def test_a_deploy_is_followed_by_verify_on_the_same_stack() -> None:
    steps = load("pulumi-stack.yml")["jobs"]["pulumi"]["steps"]
    command = next(i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("pulumi/actions@") and "command" in s.get("with", {}))
    verify = next(i for i, s in enumerate(steps) if "-m verify" in s.get("run", ""))
    assert verify > command
    assert steps[verify]["if"] == "inputs.command == 'up'"
    assert '--stack "$STACK"' in steps[verify]["run"]
