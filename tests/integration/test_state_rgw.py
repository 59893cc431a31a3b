"""Issue #21: the stack's state on the cluster's own object store, the lab's Ceph RADOS Gateway,
through the real S3 protocol and the real Pulumi CLI (its self-managed S3 backend).

1. up and preview of the real program with its state in RGW: the checkpoint and the history live
   in the bucket, the lock is gone after the up (destroy: the module's end, and case 4).
2. Two operators, each with their own PULUMI_HOME and checkout, `pulumi up` on one stack: one a
   moment after the other gets a clear refusal naming who holds the lock; at the very same instant
   both may be refused (never both let in); the state stays whole.
3. RGW stopped in the middle of an `up` (while a VM is created) and started again: the command ends
   with a message and no traceback, or goes through on the AWS SDK's retries; the rerun converges
   with nothing lost or doubled.
4. A team's state moved from a local folder to RGW (`pulumi stack export`, `pulumi stack import`):
   the stack previews no change from its new home, and is destroyed from there; its no-op preview
   timed in both homes.
"""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from lab import rgw
from lab.testing.engine import TOOLS, cli, workspace_options
from lab.testing.seed import LabAccess
from lab.testing.shared import settled
from lab.testing.stack import LabStack, api, changes, forget_stack, names, project_copy
from lab.testing.steps import run_steps

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX, MOVED = "rgws", "rgwm"
VM, SECOND = 530, 531
VM_TYPE = "proxmoxve:index/vmLegacy:VmLegacy"


def rgw_env(lab_state: dict[str, Any], home: Path | None = None) -> dict[str, str]:
    """The backend in the lab's RGW; HOME: an operator's own PULUMI_HOME (the toolchain's plugins linked in)."""
    state = lab_state["rgw"]
    env = {"PULUMI_BACKEND_URL": state["url"], "AWS_ACCESS_KEY_ID": state["access_key"], "AWS_SECRET_ACCESS_KEY": state["secret_key"]}
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        shared = TOOLS / "pulumi-home" / "plugins"
        if shared.exists() and not (home / "plugins").exists():
            (home / "plugins").symlink_to(shared)
        env["PULUMI_HOME"] = str(home)
    return env


def edit(vm_ids: list[int]) -> Any:
    def apply(config: dict[str, Any]) -> None:
        names(PREFIX)(config)
        config["vms"] = [{**config["vms"][0], "id": i, "name": f"vm{i}", "node": "pve-node2", "memoryMb": 256} for i in vm_ids]
        config["ha"] = {**config["ha"], "affinities": []}
        config["vms"] = [{k: v for k, v in vm.items() if k != "affinity"} for vm in config["vms"]]

    return apply


def bucket_keys(lab_state: dict[str, Any]) -> list[str]:
    client = rgw.s3(lab_state["rgw"])
    return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=lab_state["rgw"]["bucket"]) for o in page.get("Contents", [])]


def timed_previews(stack: LabStack, runs: int = 3) -> float:
    took = []
    for _ in range(runs):
        t0 = time.monotonic()
        assert changes(stack.preview().change_summary) == {}, stack.text()[-3000:]
        took.append(time.monotonic() - t0)
    return statistics.median(took)


def recorded(stack: LabStack) -> list[dict[str, Any]]:
    done = cli(stack.env, "stack", "export", "--stack", stack.name, cwd=stack.work)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["deployment"].get("resources") or [])


def lab_vms(ids: list[int]) -> list[int]:
    return sorted(r["vmid"] for r in api().cluster.resources.get(type="vm") if r["vmid"] in ids)


@pytest.fixture(scope="module")
def access(lab_state: dict[str, Any]) -> Iterator[LabAccess]:
    assert lab_state.get("rgw", {}).get("url", "").startswith("s3://"), "the lab has no RADOS Gateway: python -m lab up"
    for prefix in (PREFIX, MOVED):
        forget_stack(prefix, [VM, SECOND])
    settled()
    yield LabAccess(lab_state)
    rgw.start()
    for prefix in (PREFIX, MOVED):
        forget_stack(prefix, [VM, SECOND])


@pytest.fixture(scope="module")
def in_rgw(access: LabAccess, lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    tmp = tmp_path_factory.mktemp("rgw")
    stack = LabStack(PREFIX, lab_state, tmp, edit([VM]), env=rgw_env(lab_state, tmp / "home-a"))
    yield stack
    rgw.start()
    try:
        stack.destroy()
    except auto.CommandError as error:
        print(f"\n  destroy failed: {str(error)[-500:]}")
    stack.remove(keep_config=True)


def up_preview_with_the_state_in_rgw(in_rgw: LabStack, lab_state: dict[str, Any], tmp_path: Path) -> None:
    assert in_rgw.up().summary.result == "succeeded", in_rgw.text()[-3000:]
    keys = bucket_keys(lab_state)
    project = "pve-ceph-ha"
    assert f".pulumi/stacks/{project}/{PREFIX}.json" in keys, keys
    assert any(k.startswith(f".pulumi/history/{project}/{PREFIX}/") for k in keys), keys
    assert not any(k.startswith(".pulumi/locks/") for k in keys), keys  # released after the up
    assert lab_vms([VM]) == [VM]


def two_operators_up_at_once_one_gets_the_lock(in_rgw: LabStack, lab_state: dict[str, Any], tmp_path: Path) -> None:
    before = recorded(in_rgw)
    # the second operator: another checkout (the same Pulumi.<stack>.yaml, from version control) and PULUMI_HOME
    work = project_copy(tmp_path / "checkout-b", in_rgw.work / "__main__.py")
    shutil.copy(in_rgw.work / f"Pulumi.{PREFIX}.yaml", work / f"Pulumi.{PREFIX}.yaml")
    env_b = {**in_rgw.env, **rgw_env(lab_state, tmp_path / "home-b")}
    other = auto.select_stack(PREFIX, work_dir=str(work), opts=workspace_options(env_b, work))

    def both(stagger: bool) -> dict[str, Any]:
        """Both operators' `up`: at the same instant, or the second once the first holds the lock."""
        outcomes: dict[str, Any] = {}
        start = threading.Barrier(2)

        def run(label: str, target: auto.Stack) -> None:
            start.wait()
            if stagger and label == "b":
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not any(k.startswith(".pulumi/locks/") for k in bucket_keys(lab_state)):
                    time.sleep(0.1)
            try:
                outcomes[label] = target.up(color="never")
            except auto.CommandError as error:
                outcomes[label] = error

        threads = [threading.Thread(target=run, args=pair) for pair in (("a", in_rgw.stack), ("b", other))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert len(outcomes) == 2, outcomes
        for outcome in outcomes.values():
            if isinstance(outcome, auto.CommandError):
                message = str(outcome)
                assert "currently locked" in message and "Traceback" not in message and "WARN" not in message, message[-3000:]
        return outcomes

    # At the same instant both may write their lock before either lists the others': then both are
    # refused (the backend's lock never lets two in), and neither changed anything.
    same_instant = both(stagger=False)
    through = [k for k, v in same_instant.items() if not isinstance(v, auto.CommandError)]
    assert len(through) <= 1, same_instant
    print(f"\n  at the same instant: {len(through)} went through, {2 - len(through)} refused by the lock")
    # One operator a moment after the other: the first goes through, the second is told who holds the lock.
    staggered = both(stagger=True)
    assert not isinstance(staggered["a"], auto.CommandError), str(staggered["a"])[-3000:]
    refusal = str(staggered["b"])
    assert isinstance(staggered["b"], auto.CommandError) and "currently locked" in refusal, refusal[-3000:]
    print(f"  the second operator: {next(x.strip() for x in refusal.splitlines() if 'locked' in x)[:300]}")
    after = recorded(in_rgw)
    assert sorted(r["urn"] for r in after) == sorted(r["urn"] for r in before)
    assert changes(in_rgw.preview().change_summary) == {}, in_rgw.text()[-3000:]


def rgw_restarted_in_the_middle_of_an_up_then_the_rerun_converges(in_rgw: LabStack, lab_state: dict[str, Any]) -> None:
    in_rgw.reconfigure(edit([VM, SECOND]))
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = in_rgw.up()
        except auto.CommandError as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive() and lab_vms([SECOND]) == []:
        time.sleep(0.2)
    rgw.halt()  # the gateway goes away while the VM is created
    t0 = time.monotonic()
    time.sleep(10)
    rgw.start()
    print(f"\n  RGW stopped for {time.monotonic() - t0:.1f} s during the up")
    thread.join(timeout=600)
    if "error" in outcome:
        message = str(outcome["error"])
        assert "Traceback" not in message and "panic" not in message, message[-3000:]
        said = [x.strip() for x in message.splitlines() if "error" in x.lower()][:3]
        print(f"  the up failed: {said}")
        if "currently locked" in message or any("locked" in x for x in said):
            pytest.fail(f"the interrupted up left the stack locked: {message[-2000:]}")
    else:
        print("  the up went through (the AWS SDK retried the checkpoint writes)")
    rerun = in_rgw.up()
    assert rerun.summary.result == "succeeded", in_rgw.text()[-3000:]
    assert lab_vms([VM, SECOND]) == [VM, SECOND]
    vms = sorted(int(r["id"]) for r in recorded(in_rgw) if r["type"] == VM_TYPE)
    assert vms == [VM, SECOND]
    assert sorted(api_images(PREFIX)) == [f"vm-{VM}-disk-0", f"vm-{SECOND}-disk-0"]
    assert changes(in_rgw.preview().change_summary) == {}, in_rgw.text()[-3000:]


def test_one_stack_with_its_state_in_rgw(in_rgw: LabStack, lab_state: dict[str, Any], tmp_path: Path) -> None:
    """Up, two operators at once and a gateway restart, each step starting where the one before left
    the stack (lab/testing/steps.py)."""
    run_steps(
        [
            up_preview_with_the_state_in_rgw,
            two_operators_up_at_once_one_gets_the_lock,
            rgw_restarted_in_the_middle_of_an_up_then_the_rerun_converges,
        ],
        in_rgw=in_rgw,
        lab_state=lab_state,
        tmp_path=tmp_path,
    )


def api_images(prefix: str) -> list[str]:
    from lab.testing.stack import admin

    return admin(f"rbd ls {prefix}-pool").split()


def test_a_teams_state_moved_from_a_folder_to_rgw(access: LabAccess, lab_state: dict[str, Any], tmp_path: Path) -> None:
    def moved_edit(config: dict[str, Any]) -> None:
        names(MOVED)(config)
        config["vms"] = []

    local = LabStack(MOVED, lab_state, tmp_path / "local", moved_edit)
    local.up()
    in_folder = timed_previews(local)
    exported = tmp_path / "state.json"
    done = cli(local.env, "stack", "export", "--stack", MOVED, "--file", str(exported), cwd=local.work)
    assert done.returncode == 0, done.stderr
    local.remove(keep_config=True)  # the folder's copy retired: the stack lives in RGW from now on

    moved = LabStack(MOVED, lab_state, tmp_path / "rgw", moved_edit, env=rgw_env(lab_state))
    try:
        done = cli(moved.env, "stack", "import", "--stack", MOVED, "--file", str(exported), cwd=moved.work)
        assert done.returncode == 0, done.stdout + done.stderr
        in_rgw = timed_previews(moved)
        print(f"\n  no-op preview of one stack (median of 3): state in a local folder {in_folder:.2f} s, in RGW {in_rgw:.2f} s")
        assert moved.destroy().summary.result == "succeeded"
        from lab.testing.stack import pool_exists, storages

        assert f"{MOVED}-rbd" not in storages() and pool_exists(f"{MOVED}-pool")  # the pool is retained
    finally:
        moved.remove(keep_config=True)
