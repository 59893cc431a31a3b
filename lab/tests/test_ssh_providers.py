"""The health gate, the HA preflight and the scrub window's read against the running lab, over real SSH.

Read-only: nothing here changes Ceph or the cluster (the integration tests drive the same
providers through the engine, drift and failover included). Needs the running lab
(`python -m lab up`); skipped without it. Never starts or stops the lab.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lab  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]  # lab: needs the running lab (tools/run-tests.sh selects by marks)
NODES = ["pve-node1", "pve-node2", "pve-node3"]


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    try:
        data = lab.load()
    except (lab.LabError, KeyError, ValueError):
        pytest.skip("needs the running lab (python -m lab up)")
    info = data["ssh"]
    if not all(lab.port_open(host, info["port"]) for host in info["hosts"].values()):
        pytest.skip("the lab's sshd do not answer")
    return dict(data)


def connection(state: dict[str, Any], role: str) -> dict[str, Any]:
    info = state["ssh"]
    return {
        "host": info["hosts"][role],
        "port": info["port"],
        "user": info["user"],
        "privateKey": Path(info["private_key_path"]).read_text(),
        "knownHosts": Path(info["known_hosts"]).read_text(),
    }


def gate(state: dict[str, Any], pg_num: int) -> dict[str, Any]:
    return {"connection": connection(state, "ceph-admin"), "pool": "labcheck-pool", "pgNum": pg_num, "size": 3, "monitors": state["ceph"]["monitors"]}


def test_the_health_gate_passes_on_the_healthy_lab(state: dict[str, Any]) -> None:
    from components.ceph_health import HealthGateProvider

    report = HealthGateProvider().create(gate(state, 8)).outs["report"]
    assert report.startswith("health: HEALTH_OK\n") and "ceph health gate: passed; room for pool labcheck-pool" in report


def test_the_health_gate_refuses_a_pool_ceph_has_no_room_for_with_real_cephs_numbers(state: dict[str, Any]) -> None:
    from components.ceph_health import HealthGateProvider
    from components.errors import OperatorError

    with pytest.raises(OperatorError, match=r"pool labcheck-pool: pg_num 32768 x size 3 .* would exceed mon_max_pg_per_osd .* lower ceph.pool.pgNum"):
        # the Check of an up: the program's inputs (the gate runs there, on every preview and up)
        HealthGateProvider().check(gate(state, 32768), gate(state, 32768))


def test_the_ha_preflight_reads_the_labs_cluster(state: dict[str, Any]) -> None:
    from components.ha_preflight import PreflightProvider

    if "pve" not in state:
        pytest.skip("the lab runs without its PVE API")
    mode = state["pve"]["mode"]
    props = {"nodes": NODES, "connections": {node: connection(state, node) for node in NODES}, "mode": mode}
    outs = PreflightProvider().create(props).outs
    assert outs["report"].startswith("pve-node1: quorum OK, master ")
    assert outs["pveVersion"].startswith("pve-manager/9." if mode == "rules" else "pve-manager/8.")
    for node in NODES:
        assert f"{node}: pve-ha-lrm active, pve-ha-crm active" in outs["report"]


def test_the_ha_preflight_refuses_the_wrong_mode_for_the_labs_version(state: dict[str, Any]) -> None:
    from components.errors import OperatorError
    from components.ha_preflight import PreflightProvider

    if "pve" not in state:
        pytest.skip("the lab runs without its PVE API")
    wrong = "groups" if state["pve"]["mode"] == "rules" else "rules"
    props = {"nodes": NODES, "connections": {node: connection(state, node) for node in NODES}, "mode": wrong}
    with pytest.raises(OperatorError, match=rf"^HA preflight: ha.mode is {wrong}, but the cluster runs PVE \d+"):
        PreflightProvider().check(props, props)  # the Check of an up: the program's inputs


def test_the_scrub_window_reads_hours_from_real_ceph(state: dict[str, Any]) -> None:
    from components.ceph_scrub import ScrubWindowProvider

    seen = ScrubWindowProvider().read("osd-scrub-window", {"connection": connection(state, "ceph-admin"), "beginHour": 22, "endHour": 6}).outs
    assert all(isinstance(seen[key], int) and 0 <= seen[key] <= 23 for key in ("beginHour", "endHour"))
