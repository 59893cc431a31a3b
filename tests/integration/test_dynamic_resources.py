"""The real engine against the real Ceph and the lab's PVE API, for the program's own resources:
the pool, the cephx client and the RBD storage (tests/integration/programs/dynamic_only).

Up from nothing, nothing to do the second time, drift made out of band and repaired, adoption
refused and granted, destroy that keeps the pool and refuses to delete one that holds images,
secrets that never appear in plain text, and a bad config stopped before anything is touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from lab.testing.engine import cli
from lab.testing.stack import (
    PROGRAMS,
    Drift,
    LabStack,
    admin,
    api,
    changes,
    client_caps,
    drifts_then_repair,
    forget,
    names,
    pool_detail,
    pool_exists,
    storages,
)
from lab.testing.steps import run_steps

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PROGRAM = PROGRAMS / "dynamic_only" / "__main__.py"


@pytest.fixture(scope="module")
def dyn(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget("dyn")
    stack = LabStack("dyn", lab_state, tmp_path_factory.mktemp("dyn"), names("dyn"), program=PROGRAM)
    yield stack
    stack.remove()


def up_from_nothing_creates_pool_client_and_active_storage(dyn: LabStack) -> None:
    t0 = time.monotonic()
    result = dyn.up()
    print(f"\n  cold up (pool, client, storage): {time.monotonic() - t0:.1f} s")
    assert result.outputs["clientKey"].secret
    pool = pool_detail("dyn-pool")
    assert (pool["pg_num_target"], pool["size"], pool["pg_autoscale_mode"]) == (32, 3, "off")
    assert "rbd" in pool["application_metadata"]
    assert client_caps("dyn") == {"mon": "profile rbd", "osd": "profile rbd pool=dyn-pool"}
    store = storages()["dyn-rbd"]
    assert (store["type"], store["pool"], store["username"]) == ("rbd", "dyn-pool", "dyn")
    dyn.verified("storage")  # python -m verify: Status = Active on every node


def second_up_and_preview_change_nothing(dyn: LabStack) -> None:
    t0 = time.monotonic()
    up = dyn.up()
    print(f"\n  no-op up: {time.monotonic() - t0:.1f} s")
    assert changes(up.summary.resource_changes or {}) == {}, dyn.text()[-3000:]
    t0 = time.monotonic()
    assert changes(dyn.preview().change_summary) == {}, dyn.text()[-3000:]
    print(f"  no-op preview: {time.monotonic() - t0:.1f} s")


def drift_of_each_resource(dyn: LabStack) -> None:
    """One drift of each of the three at once (lab/testing/stack.py drifts_then_repair: the preview names each)."""
    drifts_then_repair(
        dyn,
        Drift("pool pg_num 16", "rbd-pool", lambda: admin("ceph osd pool set dyn-pool pg_num 16"), lambda: pool_detail("dyn-pool")["pg_num_target"] == 32),
        Drift(
            "client caps widened",
            "cephx-client",
            lambda: admin("ceph auth caps client.dyn mon 'allow *' osd 'allow *'"),
            lambda: client_caps("dyn") == {"mon": "profile rbd", "osd": "profile rbd pool=dyn-pool"},
        ),
        Drift(
            "storage monhost edited",
            "storage-storage",
            lambda: api().storage("dyn-rbd").put(monhost="127.10.10.101"),
            lambda: storages()["dyn-rbd"]["monhost"].split() == ["127.10.10.101", "127.10.10.102", "127.10.10.103"],
        ),
    )


def each_removed_by_hand(dyn: LabStack) -> None:
    """The pool's application, the client and the storage removed, each made again by the next up."""
    drifts_then_repair(
        dyn,
        Drift(
            "pool application removed",
            "rbd-pool",
            lambda: admin("ceph osd pool application disable dyn-pool rbd --yes-i-really-mean-it"),
            lambda: "rbd" in pool_detail("dyn-pool")["application_metadata"],
        ),
        Drift("client deleted", "cephx-client", lambda: admin("ceph auth del client.dyn"), lambda: client_caps("dyn") is not None),
        Drift("storage deleted", "storage-storage", lambda: api().storage("dyn-rbd").delete(), lambda: "dyn-rbd" in storages()),
    )


def no_secret_in_state_or_output(dyn: LabStack, lab_state: dict[str, Any]) -> None:
    key = json.loads(admin("ceph auth get client.dyn -f json"))[0]["key"]
    tokens = [lab_state["pve"]["stack_token_secret"], lab_state["pve"]["token_secret"]]  # the stack's, and the lab's root token
    private_key = Path(lab_state["ssh"]["private_key_path"]).read_text().strip().splitlines()[1]
    state = cli(dyn.env, "stack", "export", "--stack", "dyn", cwd=dyn.work)
    assert state.returncode == 0, state.stderr
    for secret in (key, *tokens, private_key):
        assert secret not in state.stdout
        assert secret not in dyn.text()


def destroy_keeps_the_pool_and_removes_the_rest(dyn: LabStack) -> None:
    assert dyn.destroy().summary.result == "succeeded"
    assert pool_exists("dyn-pool")
    assert client_caps("dyn") is None
    assert "dyn-rbd" not in storages()


def test_the_resources_from_nothing_through_drift_to_destroy(dyn: LabStack, lab_state: dict[str, Any]) -> None:
    """One stack's life, each step starting where the one before left it (lab/testing/steps.py)."""
    run_steps(
        [
            up_from_nothing_creates_pool_client_and_active_storage,
            second_up_and_preview_change_nothing,
            drift_of_each_resource,
            each_removed_by_hand,
            no_secret_in_state_or_output,
            destroy_keeps_the_pool_and_removes_the_rest,
        ],
        dyn=dyn,
        lab_state=lab_state,
    )


def test_adoption_is_refused_without_the_switch_and_granted_with_it(lab_state: dict[str, Any], tmp_path: Path) -> None:
    forget("adopt")
    admin("ceph osd pool create adopt-pool 8 8 replicated --autoscale-mode=off")
    admin("ceph auth get-or-create client.adopt mon 'allow r' osd 'allow rwx pool=adopt-pool'")
    api().storage.post(storage="adopt-rbd", type="rbd", pool="adopt-pool", monhost="127.10.10.101", username="adopt", content="images")
    stack = LabStack("adopt", lab_state, tmp_path, names("adopt"), program=PROGRAM)
    try:
        with pytest.raises(auto.CommandError) as info:
            stack.up()
        message = str(info.value)
        assert "Ceph pool adopt-pool already exists" in message and "adopt.pool true" in message
        assert "Traceback" not in message
        stack.reconfigure(lambda c: c.update(adopt={"pool": True, "client": True, "storage": True}))
        stack.up()
        assert client_caps("adopt") == {"mon": "profile rbd", "osd": "profile rbd pool=adopt-pool"}
        assert storages()["adopt-rbd"]["monhost"].split() == ["127.10.10.101", "127.10.10.102", "127.10.10.103"]
        assert changes(stack.preview().change_summary) == {}
    finally:
        stack.destroy()
        stack.remove()


def test_pool_deletion_refuses_while_images_exist(lab_state: dict[str, Any], tmp_path: Path) -> None:
    forget("delpool")
    stack = LabStack("delpool", lab_state, tmp_path, names("delpool"), program=PROGRAM)
    stack.reconfigure(lambda c: c.update(allowPoolDeletion=True))
    try:
        stack.up()
        admin("rbd create delpool-pool/vm-999-disk-0 --size 4M")
        with pytest.raises(auto.CommandError) as info:
            stack.destroy()
        message = str(info.value)
        assert "refusing to delete Ceph pool delpool-pool" in message and "vm-999-disk-0" in message
        assert "Traceback" not in message
        assert pool_exists("delpool-pool")
        admin("rbd rm delpool-pool/vm-999-disk-0")
        stack.destroy()
        assert not pool_exists("delpool-pool")
    finally:
        stack.remove()


def test_bad_config_is_stopped_before_anything_is_touched(lab_state: dict[str, Any], tmp_path: Path) -> None:
    stack = LabStack("badcfg", lab_state, tmp_path, names("badcfg"), program=PROGRAM)
    stack.reconfigure(lambda c: c["ceph"]["pool"].update(pgNum=200))
    try:
        with pytest.raises(auto.CommandError) as info:
            stack.preview()
        message = str(info.value)
        assert "config error: pve-ceph-ha:ceph.pool.pgNum = 200: must be a power of two" in message
        assert "Traceback" not in message
        assert not pool_exists("badcfg-pool")
    finally:
        stack.remove()
