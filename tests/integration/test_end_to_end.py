"""The real engine, the real providers, the real Ceph and the lab's PVE API: the runbook end to end.

One stack goes through the whole life an operator gives it, in order: up from nothing (the
runbook's checks), a second up and a preview with nothing to do, drift made out of band and
repaired, a failover that Pulumi leaves alone, and destroy that keeps the pool.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab import wait_for
from tests.integration.lab_stack import LabStack, admin, changes, drift_then_repair, pool_detail
from tools import runbook_checks

POOL, STORAGE, CLIENT, VM = "e2e-pool", "e2e-rbd", "e2e", 201


def edit(config: dict[str, Any]) -> None:
    config["ceph"]["pool"]["name"] = POOL
    config["ceph"]["client"]["name"] = CLIENT
    config["storage"]["id"] = STORAGE
    config["vms"] = [{**config["vms"][0], "id": VM, "name": f"vm{VM}"}]


@pytest.fixture(scope="module")
def e2e(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    stack = LabStack("e2e", lab_state, tmp_path_factory.mktemp("e2e"), edit)
    yield stack
    stack.remove()


def checks() -> runbook_checks.Lab:
    return runbook_checks.Lab.load()


def test_1_up_from_nothing_reaches_the_runbooks_end_state(e2e: LabStack) -> None:
    t0 = time.monotonic()
    result = e2e.up()
    print(f"\n  cold up: {time.monotonic() - t0:.1f} s, {result.summary.resource_changes}")
    assert result.summary.result == "succeeded"
    outputs = {k: v.value for k, v in result.outputs.items()}
    assert (outputs["storageId"], outputs["pool"], outputs["clientName"]) == (STORAGE, POOL, CLIENT)
    assert result.outputs["clientKey"].secret
    assert outputs["vms"] == [{"id": VM, "name": f"vm{VM}", "initialNode": "pve-node1", "haSid": f"vm:{VM}"}]
    lab = checks()
    assert runbook_checks.ceph_health(lab)[0] == "health: HEALTH_OK"
    runbook_checks.rbd_images(lab, POOL, [VM])
    runbook_checks.storage_active(lab, STORAGE)
    wait_for(f"vm:{VM} started", lambda: _started(lab, VM), 120)


def _started(lab: runbook_checks.Lab, vm: int) -> bool:
    try:
        runbook_checks.ha_status(lab, [vm])
        return True
    except runbook_checks.CheckFailed:
        return False


def test_2_second_up_and_preview_change_nothing(e2e: LabStack) -> None:
    t0 = time.monotonic()
    up = e2e.up()
    print(f"\n  no-op up: {time.monotonic() - t0:.1f} s")
    assert changes(up.summary.resource_changes or {}) == {}, e2e.text()[-3000:]
    preview = e2e.preview()
    assert changes(preview.change_summary) == {}, e2e.text()[-3000:]


def test_3_drift_pool_pg_num(e2e: LabStack) -> None:
    drift_then_repair(
        e2e,
        lambda: admin(f"ceph osd pool set {POOL} pg_num 16"),
        lambda: pool_detail(POOL)["pg_num_target"] == 32,
    )


def test_3_drift_pool_application_removed(e2e: LabStack) -> None:
    drift_then_repair(
        e2e,
        lambda: admin(f"ceph osd pool application disable {POOL} rbd --yes-i-really-mean-it"),
        lambda: "rbd" in pool_detail(POOL)["application_metadata"],
    )


def test_3_drift_client_caps_widened(e2e: LabStack) -> None:
    drift_then_repair(
        e2e,
        lambda: admin(f"ceph auth caps client.{CLIENT} mon 'allow *' osd 'allow *'"),
        lambda: json.loads(admin(f"ceph auth get client.{CLIENT} -f json"))[0]["caps"]["osd"] == f"profile rbd pool={POOL}",
    )


def test_3_drift_client_deleted(e2e: LabStack) -> None:
    drift_then_repair(
        e2e,
        lambda: admin(f"ceph auth del client.{CLIENT}"),
        lambda: bool(json.loads(admin(f"ceph auth get client.{CLIENT} -f json"))),
    )


def test_3_drift_storage_monhost_edited(e2e: LabStack) -> None:
    api = checks().api()
    drift_then_repair(
        e2e,
        lambda: api.storage(STORAGE).put(monhost="127.10.10.101"),
        lambda: api.storage(STORAGE).get()["monhost"] == "127.10.10.101 127.10.10.102 127.10.10.103",
    )


def test_3_drift_storage_deleted(e2e: LabStack) -> None:
    api = checks().api()
    drift_then_repair(
        e2e,
        lambda: api.storage(STORAGE).delete(),
        lambda: api.storage(STORAGE).get()["type"] == "rbd",
    )


def test_3_drift_ha_resource_removed(e2e: LabStack) -> None:
    api = checks().api()
    drift_then_repair(
        e2e,
        lambda: api.cluster.ha.resources(f"vm:{VM}").delete(),
        lambda: api.cluster.ha.resources(f"vm:{VM}").get()["sid"] == f"vm:{VM}",
    )


def test_3_drift_vm_disk_cache_changed(e2e: LabStack) -> None:
    api = checks().api()

    def node() -> str:
        return next(r["node"] for r in api.cluster.resources.get(type="vm") if r["vmid"] == VM)

    def scsi0() -> str:
        return api.nodes(node()).qemu(VM).config.get()["scsi0"]

    drift_then_repair(
        e2e,
        lambda: api.nodes(node()).qemu(VM).config.put(scsi0=scsi0().replace("cache=writeback", "cache=none")),
        lambda: "cache=writeback" in scsi0(),
    )


def test_4_failover_is_left_alone_by_pulumi(e2e: LabStack) -> None:
    import lab

    api = checks().api()

    def where() -> str | None:
        for r in api.cluster.resources.get(type="vm"):
            if r["vmid"] == VM and r.get("status") == "running":
                return str(r["node"])
        return None

    assert wait_for("the VM running", where, 120) == "pve-node1"
    lab.fault("pve-node1", "poweroff")
    try:
        t0 = time.monotonic()
        new_node = wait_for("the VM started elsewhere", lambda: (n := where()) and n != "pve-node1" and n, deadline=180)
        print(f"\n  vm:{VM} started on {new_node} after {time.monotonic() - t0:.1f} s")
        preview = e2e.preview()
        assert changes(preview.change_summary) == {}, e2e.text()[-3000:]
        up = e2e.up()
        assert changes(up.summary.resource_changes or {}) == {}, e2e.text()[-3000:]
        assert where() == new_node
    finally:
        lab.fault("pve-node1", "restore")


def test_5_destroy_keeps_the_pool_and_leaves_nothing_else(e2e: LabStack) -> None:
    result = e2e.destroy()
    assert result.summary.result == "succeeded"
    assert POOL in admin("ceph osd pool ls").split()
    api = checks().api()
    assert STORAGE not in [s["storage"] for s in api.storage.get()]
    assert f"vm:{VM}" not in [r["sid"] for r in api.cluster.ha.resources.get()]
    assert VM not in [r["vmid"] for r in api.cluster.resources.get(type="vm")]
    assert admin(f"rbd ls {POOL}").split() == []
    with pytest.raises(runbook_checks.CheckFailed, match="exit 2"):  # ENOENT: the client is gone
        admin(f"ceph auth get client.{CLIENT}")
