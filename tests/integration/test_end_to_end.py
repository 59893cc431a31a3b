"""The real engine, the real plugin, the real Ceph and the lab's PVE API: the runbook end to end.

One stack of the real program (`__main__.py`) goes through the whole life an operator gives it,
in order: up from nothing (`python -m verify`: every runbook check passes), a second up and a
preview with nothing to do, drift made out of band in every layer and repaired, a failover that
Pulumi leaves alone (and verify passes after it), and destroy that keeps the pool and leaves
nothing else behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pulumi import automation as auto

import lab
from components.ha_preflight import parse_ha_status
from lab import LabError, wait_for
from lab.testing.shared import FAST_HA, ha_clock
from lab.testing.stack import (
    Drift,
    LabStack,
    admin,
    api,
    changes,
    drifts_then_repair,
    forget_stack,
    leftovers,
    node_online,
    node_shell,
    pool_detail,
    remove_vms,
)
from lab.testing.steps import run_steps

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

POOL, STORAGE, CLIENT, VM = "e2e-pool", "e2e-rbd", "e2e", 201
SID = f"vm:{VM}"


def edit(config: dict[str, Any]) -> None:
    config["ceph"]["pool"]["name"] = POOL
    config["ceph"]["client"]["name"] = CLIENT
    config["storage"]["id"] = STORAGE
    # The API endpoint is a node the failovers never fail (the endpoint's own node going down is
    # test_node_down.py's): the VM is kept on pve-node1/pve-node2 by a strict node-affinity rule,
    # without failback.
    config["proxmox"]["endpoint"] = "https://127.10.20.13:8006"
    config["ha"] = {**config["ha"], "affinities": [{"name": "e2e-pair", "nodes": {"pve-node1": 1, "pve-node2": 1}, "strict": True, "failback": False}]}
    config["vms"] = [{**config["vms"][0], "id": VM, "name": f"vm{VM}", "affinity": "e2e-pair"}]


@pytest.fixture(scope="module")
def e2e(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget_stack("e2e", [VM])  # what an interrupted earlier run may have left
    stack = LabStack("e2e", lab_state, tmp_path_factory.mktemp("e2e"), edit)
    yield stack
    stack.remove()


def vm_node() -> str | None:
    """Where the VM runs now, as /cluster/resources says (the node the plugin reads back)."""
    return next((str(r["node"]) for r in api().cluster.resources.get(type="vm") if r["vmid"] == VM and r.get("status") == "running"), None)


def started(where: Callable[[], str | None] = vm_node) -> bool:
    """`ha-manager status` on a node that is on shows the VM's service started, and the VM runs."""
    node = next((n for n in ("pve-node1", "pve-node2", "pve-node3") if node_online(n)), None)
    try:
        status = node_shell(node, "ha-manager status") if node else ""
    except LabError:
        return False
    return parse_ha_status(status).services.get(SID, ("", ""))[1] == "started" and where() is not None


def up_from_nothing_reaches_the_runbooks_end_state(e2e: LabStack) -> None:
    t0 = time.monotonic()
    result = e2e.up()
    print(f"\n  cold up: {time.monotonic() - t0:.1f} s, {result.summary.resource_changes}")
    assert result.summary.result == "succeeded"
    outputs = {k: v.value for k, v in result.outputs.items()}
    assert (outputs["storageId"], outputs["pool"], outputs["clientName"]) == (STORAGE, POOL, CLIENT)
    assert result.outputs["clientKey"].secret
    assert outputs["vms"] == [{"id": VM, "name": f"vm{VM}", "initialNode": "pve-node1", "haSid": SID, "images": [f"{POOL}/vm-{VM}-disk-0"]}]
    assert "health: HEALTH_OK" in outputs["healthReport"]
    wait_for(f"{SID} started", started, 120)
    checks = e2e.verified()  # python -m verify: every runbook check passes, best practices included
    assert checks["images"]["summary"] == f"rbd ls {POOL}: vm-{VM}-disk-0"


def second_up_and_preview_change_nothing(e2e: LabStack) -> None:
    t0 = time.monotonic()
    up = e2e.up()
    print(f"\n  no-op up: {time.monotonic() - t0:.1f} s")
    assert changes(up.summary.resource_changes or {}) == {}, e2e.text()[-3000:]
    preview = e2e.preview()
    assert changes(preview.change_summary) == {}, e2e.text()[-3000:]


# -- drift: made out of band, shown by preview, repaired by up, preview clean after --
#
# Drifts of different resources are made together, one round each (lab/testing/stack.py
# drifts_then_repair): the preview must plan a change of each drifted resource by name, so none
# hides behind another, and two drifts of one resource are never in the same round.


def _caps() -> dict[str, str]:
    return dict(json.loads(admin(f"ceph auth get client.{CLIENT} -f json"))[0]["caps"])


def _scsi0() -> str:
    node = wait_for("the VM's node", vm_node, 60)
    return str(api().nodes(node).qemu(VM).config.get()["scsi0"])


def _set_scsi0(value: str) -> None:
    api().nodes(vm_node()).qemu(VM).config.put(scsi0=value)


def _ceph_common_installed() -> bool:
    return node_shell("pve-node2", "dpkg-query -W -f='${Status}' ceph-common").strip() == "install ok installed"


def drift_in_every_layer(e2e: LabStack) -> None:
    """Ceph (pool, client, scrub window), the nodes (a package), PVE (storage, VM, HA resource)."""
    drifts_then_repair(
        e2e,
        Drift("pool pg_num 16", "rbd-pool", lambda: admin(f"ceph osd pool set {POOL} pg_num 16"), lambda: pool_detail(POOL)["pg_num_target"] == 32),
        Drift(
            "client caps widened",
            "cephx-client",
            lambda: admin(f"ceph auth caps client.{CLIENT} mon 'allow *' osd 'allow *'"),
            lambda: _caps()["osd"] == f"profile rbd pool={POOL}",
        ),
        Drift(
            "storage monhost edited",
            "storage-storage",
            lambda: api().storage(STORAGE).put(monhost="127.10.10.101"),
            lambda: api().storage(STORAGE).get()["monhost"] == "127.10.10.101 127.10.10.102 127.10.10.103",
        ),
        Drift(
            "ceph-common removed from pve-node2",
            "ceph-common-pve-node2-package",
            lambda: node_shell("pve-node2", "apt-get remove -y ceph-common"),
            _ceph_common_installed,
        ),
        Drift(
            "scrub window changed",
            "scrub-window",
            lambda: admin("ceph config set osd osd_scrub_begin_hour 3"),
            lambda: admin("ceph config get osd osd_scrub_begin_hour").strip() == "22",
        ),
        Drift(
            "HA max_restart changed",
            f"vm{VM}-ha",
            lambda: api().cluster.ha.resources(SID).put(max_restart=3),
            lambda: int(api().cluster.ha.resources(SID).get()["max_restart"]) == 1,
        ),
        Drift(
            "VM disk cache changed",
            f"vm{VM}-vm",
            lambda: _set_scsi0(_scsi0().replace("cache=writeback", "cache=none")),
            lambda: "cache=writeback" in _scsi0(),
        ),
    )


def drift_again_objects_deleted(e2e: LabStack) -> None:
    """The same resources a second way each: the pool's application, the storage and the HA resource removed, the disk's discard off."""
    drifts_then_repair(
        e2e,
        Drift(
            "pool application removed",
            "rbd-pool",
            lambda: admin(f"ceph osd pool application disable {POOL} rbd --yes-i-really-mean-it"),
            lambda: "rbd" in pool_detail(POOL)["application_metadata"],
        ),
        Drift("storage deleted", "storage-storage", lambda: api().storage(STORAGE).delete(), lambda: api().storage(STORAGE).get()["type"] == "rbd"),
        Drift(
            "HA resource removed",
            f"vm{VM}-ha",
            lambda: api().cluster.ha.resources(SID).delete(),
            lambda: api().cluster.ha.resources(SID).get()["sid"] == SID,
        ),
        Drift(
            "VM disk discard changed",
            f"vm{VM}-vm",
            lambda: _set_scsi0(_scsi0().replace("discard=on", "discard=ignore")),
            lambda: "discard=on" in _scsi0(),
        ),
    )
    wait_for(f"{SID} started again", started, 120)


def drift_client_deleted(e2e: LabStack) -> None:
    """With the client gone PVE cannot read the VM's disk, so the plugin's refresh of the VM fails
    (as on a real cluster: PVE's `rbd info` of the disk fails, in run_command's words, rbd's own
    reason not shown). `pulumi up --refresh=false` makes the client again (its own diff looks at
    Ceph) and hands the new key to the storage; then all is clean."""
    admin(f"ceph auth del client.{CLIENT}")
    # the HTTP reason line the plugin shows is cut at 200 characters (fakepve), before the exit code
    with pytest.raises(auto.CommandError, match=r"Reason: command '/usr/bin/rbd -p [^']*--keyring /etc/pve/priv/ceph/[^' ]+\.keyring info"):
        e2e.preview()
    e2e.up_without_refresh()
    assert _caps() == {"mon": "profile rbd", "osd": f"profile rbd pool={POOL}"}
    e2e.verified("storage")
    assert changes(e2e.preview().change_summary) == {}, e2e.text()[-3000:]


def drift_vm_deleted(e2e: LabStack) -> None:
    drifts_then_repair(
        e2e,
        Drift("VM deleted", f"vm{VM}-vm", lambda: remove_vms([VM]), lambda: vm_node() is not None or wait_for(f"{SID} started", started, 120)),
    )
    wait_for(f"{SID} started", started, 120)
    assert e2e.stack.outputs()["vms"].value[0]["images"] == [f"{POOL}/vm-{VM}-disk-0"]


# -- failover: HA moves the VM, Pulumi plans nothing, twice in a row --


def a_failover_is_left_alone_by_pulumi_and_verify_passes(e2e: LabStack) -> None:
    """One failover here (the ten in a row are test_hardening_vms' drill series): preview and up
    change nothing, the VM stays where HA put it, and `python -m verify` passes on the moved VM."""
    wait_for(f"{SID} started", started, 120)
    failed = wait_for("the VM running", vm_node, 120)
    assert failed in ("pve-node1", "pve-node2"), failed  # never the API endpoint's node
    lab.fault(failed, "poweroff", log=lambda _line: None)
    try:
        t0 = time.monotonic()
        with ha_clock():  # that HA moves it and Pulumi leaves it is the point here, not when
            moved = wait_for("the VM started elsewhere", lambda: (n := vm_node()) and n != failed and n, deadline=180)
        print(f"\n  {SID} started on {moved} {time.monotonic() - t0:.1f} s after {failed} was powered off (time scale {FAST_HA})")
        preview = e2e.preview()
        assert changes(preview.change_summary) == {}, e2e.text()[-3000:]
        up = e2e.up()
        assert changes(up.summary.resource_changes or {}) == {}, e2e.text()[-3000:]
        assert vm_node() == moved, "pulumi up moved the VM"
    finally:
        lab.fault(failed, "restore", log=lambda _line: None)
    wait_for(f"{failed} online again", lambda: node_online(failed), 60)
    wait_for(f"{SID} started", lambda: started(), 120)
    placement = e2e.verified()["ha-placement"]  # every check, after the failover
    assert placement["summary"] == f"{SID} running on {moved} (affinity e2e-pair: pve-node1, pve-node2)", placement
    assert vm_node() == moved
    assert changes(e2e.preview().change_summary) == {}, e2e.text()[-3000:]


def destroy_keeps_the_pool_and_leaves_nothing_else(e2e: LabStack) -> None:
    result = e2e.destroy()
    assert result.summary.result == "succeeded"
    assert POOL in admin("ceph osd pool ls").split()
    assert leftovers(POOL, STORAGE, CLIENT, [VM]) == {}


def test_the_runbooks_stack_from_nothing_to_destroy(e2e: LabStack) -> None:
    """The stack's whole life, each step starting where the one before left it (lab/testing/steps.py)."""
    run_steps(
        [
            up_from_nothing_reaches_the_runbooks_end_state,
            second_up_and_preview_change_nothing,
            drift_in_every_layer,
            drift_again_objects_deleted,
            drift_client_deleted,
            drift_vm_deleted,
            a_failover_is_left_alone_by_pulumi_and_verify_passes,
            destroy_keeps_the_pool_and_leaves_nothing_else,
        ],
        e2e=e2e,
    )
