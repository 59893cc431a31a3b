"""CephHealthGate's provider (runbook 1-1): evaluated on every preview and up, never a state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import rpc

from clients.ssh import Result
from components.ceph_health import HealthGateInputs, HealthGateProvider, gate_script, verdict
from components.errors import OperatorError
from tests.unit.fake_ceph import HEALTHY, PEERING, FakeCeph, FakeClock, ceph_status, fake_monitors

CONNECTION = {"host": "127.10.10.101", "port": 2222, "user": "root", "privateKey": "unused", "knownHosts": ""}
WHERE = "root@127.10.10.101:2222"
FAILING = Result(
    1,
    "health: HEALTH_WARN\nmon: 3 daemons, quorum a,b,c\nosd: 3 osds: 2 up, 3 in\n"
    "ceph health gate: health is HEALTH_WARN, not HEALTH_OK (OSD_DOWN: 1 osds down)\n"
    "ceph health gate: osd: 3 osds: 2 up, 3 in (every OSD must be up and in)\n"
    "ceph health gate: refusing to touch Ceph; fix the cluster (ceph health detail) and run pulumi up again\n",
    "",
)

PEERING_FAILS = Result(
    1,
    "health: HEALTH_WARN\nmon: 3 daemons, quorum a,b,c\nosd: 3 osds: 3 up, 3 in\n"
    "ceph health gate: health is HEALTH_WARN, not HEALTH_OK (PG_AVAILABILITY: Reduced data availability: 1 pg inactive, 1 pg peering)\n"
    "ceph health gate: refusing to touch Ceph; fix the cluster (ceph health detail) and run pulumi up again\n",
    "",
)


@pytest.fixture
def ceph() -> FakeCeph:
    return FakeCeph()


def props(**overrides: Any) -> dict[str, Any]:
    monitors = ["127.10.10.101", "127.10.10.102", "127.10.10.103"]
    return {**HealthGateInputs(connection=CONNECTION, pool="rbd-pool", pgNum=32, size=3, monitors=monitors), **overrides}


def gate_runs(ceph: FakeCeph) -> int:
    return sum(1 for c in ceph.commands if c[:2] == ["python3", "-"])


def test_create_runs_the_gate_script_for_the_pool_and_records_its_report(ceph: FakeCeph) -> None:
    result = HealthGateProvider(ceph.executor).create(props(pgNum=32.0, size=3.0))
    assert ceph.commands == [["python3", "-", "rbd-pool", "32", "3"]]
    assert ceph.gate_stdin == [gate_script()]
    assert result.outs["report"] == HEALTHY


def test_a_healthy_unchanged_gate_is_evaluated_by_every_check_and_its_diff_shows_no_change(ceph: FakeCeph) -> None:
    """The engine calls Check with the program's inputs on every preview and up (never in a refresh)."""
    provider = HealthGateProvider(ceph.executor)
    outs = provider.create(props()).outs
    for run in (1, 2, 3):
        provider.check(props(), props())
        assert provider.diff("ceph-health-gate", outs, props()).changes is False
        assert gate_runs(ceph) == 1 + run


def test_a_failing_gate_in_check_stops_the_run_with_the_scripts_reasons(ceph: FakeCeph) -> None:
    provider = HealthGateProvider(ceph.executor)
    provider.create(props())
    ceph.gate = FAILING
    with pytest.raises(OperatorError) as info:
        provider.check(props(), props())
    assert str(info.value) == (
        f"Ceph health gate (runbook 1-1) on {WHERE}: health is HEALTH_WARN, not HEALTH_OK (OSD_DOWN: 1 osds down); "
        "osd: 3 osds: 2 up, 3 in (every OSD must be up and in); "
        "refusing to touch Ceph; fix the cluster (ceph health detail) and run pulumi up again"
    )


def test_a_failing_gate_refuses_to_be_created(ceph: FakeCeph) -> None:
    ceph.gate = FAILING
    with pytest.raises(OperatorError, match="HEALTH_WARN"):
        HealthGateProvider(ceph.executor).create(props())


def test_a_new_gate_is_evaluated_by_check_so_the_first_preview_shows_the_reasons(ceph: FakeCeph) -> None:
    ceph.gate = FAILING
    with pytest.raises(OperatorError, match="OSD_DOWN"):
        HealthGateProvider(ceph.executor).check({}, props())


def test_diff_asks_nothing(ceph: FakeCeph) -> None:
    """Diff is also called for a refresh (and the one that starts a destroy): it never runs the gate."""
    ceph.drop_connection = True  # any SSH would fail
    HealthGateProvider(ceph.executor).diff("ceph-health-gate", {**props(), "report": HEALTHY}, props())
    assert ceph.commands == []


def test_nothing_runs_while_an_input_is_unknown(ceph: FakeCeph) -> None:
    provider = HealthGateProvider(ceph.executor)
    provider.check({}, props(pool=rpc.UNKNOWN))
    provider.diff("ceph-health-gate", props(), props(pool=rpc.UNKNOWN))
    assert ceph.commands == []


def test_a_changed_pool_spec_is_a_change_that_runs_the_gate_again(ceph: FakeCeph) -> None:
    provider = HealthGateProvider(ceph.executor)
    outs = provider.create(props()).outs
    assert provider.diff("ceph-health-gate", outs, props(pgNum=64)).changes is True
    updated = provider.update("ceph-health-gate", outs, props(pgNum=64))
    assert ceph.commands[-1] == ["python3", "-", "rbd-pool", "64", "3"]
    assert updated.outs is not None and updated.outs["report"] == HEALTHY


def test_refresh_runs_nothing(ceph: FakeCeph) -> None:
    provider = HealthGateProvider(ceph.executor)
    outs = provider.create(props()).outs
    read = provider.read("ceph-health-gate", outs)
    assert (read.id, read.outs) == ("ceph-health-gate", outs)
    assert gate_runs(ceph) == 1


def test_ssh_trouble_is_named_with_the_gate(ceph: FakeCeph) -> None:
    ceph.drop_connection = True
    with pytest.raises(OperatorError, match=r"^Ceph health gate \(runbook 1-1\): SSH to root@127.10.10.101:2222: the connection dropped"):
        HealthGateProvider(ceph.executor).check(props(), props())


def test_a_refresh_runs_no_check(ceph: FakeCeph) -> None:
    """A refresh calls Read, then Diff with the state's inputs as the new ones: destroy and refresh never depend on Ceph's health."""
    ceph.drop_connection = True  # any SSH would fail
    recorded = {**props(), "report": "health: HEALTH_OK"}
    provider = HealthGateProvider(ceph.executor)
    assert provider.read("ceph-health-gate", recorded).outs == recorded
    assert provider.diff("ceph-health-gate", recorded, {**props(), "report": None}).changes is False


def status_reads(ceph: FakeCeph) -> int:
    return sum(1 for c in ceph.commands if c == ["ceph", "status", "-f", "json"])


# -- a node just fenced: Ceph re-peers for a few seconds ------------------------------------


def test_a_gate_failing_on_pg_peering_waits_and_passes_once_it_settled(ceph: FakeCeph) -> None:
    ceph.gate = [PEERING_FAILS, Result(0, HEALTHY, "")]
    ceph.status = [PEERING, PEERING, ceph_status()]
    clock = FakeClock()
    report = HealthGateProvider(ceph.executor, clock).create(props()).outs["report"]
    assert report == HEALTHY + "ceph health gate: HEALTH_OK after 4.0 s of PG peering\n"
    assert (gate_runs(ceph), status_reads(ceph), clock.sleeps) == (2, 3, [2.0, 2.0])


def test_pg_peering_that_does_not_settle_stops_the_run_at_the_bound(ceph: FakeCeph) -> None:
    ceph.gate, ceph.status = PEERING_FAILS, [PEERING]
    clock = FakeClock()
    with pytest.raises(OperatorError) as info:
        HealthGateProvider(ceph.executor, clock).check(props(), props())
    assert str(info.value) == (
        f"Ceph health gate (runbook 1-1) on {WHERE}: PG peering that did not settle within 30 s: health is HEALTH_WARN, not HEALTH_OK "
        "(PG_AVAILABILITY: Reduced data availability: 1 pg inactive, 1 pg peering); pgs: 31 active+clean, 1 peering; "
        "refusing to touch Ceph; find the PGs that stay inactive (ceph pg dump_stuck inactive, then ceph pg PGID query) and run pulumi up again"
    )
    assert (sum(clock.sleeps), gate_runs(ceph)) == (30.0, 1)


def test_a_real_problem_stops_the_gate_at_once_without_waiting(ceph: FakeCeph) -> None:
    ceph.gate = FAILING
    ceph.status = [ceph_status("HEALTH_WARN", {"OSD_DOWN": "1 osds down", "PG_AVAILABILITY": "Reduced data availability: 1 pg peering"}, {"peering": 32}, up=2)]
    clock = FakeClock()
    with pytest.raises(OperatorError, match=r"OSD_DOWN: 1 osds down\); osd: 3 osds: 2 up, 3 in"):
        HealthGateProvider(ceph.executor, clock).create(props())
    assert (clock.sleeps, gate_runs(ceph), status_reads(ceph)) == ([], 1, 1)


def test_a_gate_failing_on_something_else_than_health_reads_no_status(ceph: FakeCeph) -> None:
    ceph.gate = Result(1, "health: HEALTH_OK\nceph health gate: pool rbd-pool: pg_num 512 x size 3 = 1536 PG replicas would exceed ...\n", "")
    with pytest.raises(OperatorError, match="would exceed"):
        HealthGateProvider(ceph.executor, FakeClock()).create(props())
    assert status_reads(ceph) == 0


def test_a_gate_that_cannot_run_says_what_the_admin_node_lacks() -> None:
    with pytest.raises(OperatorError, match=r"could not run on root@h:22 \(exit 127\): bash: line 1: python3: command not found; the admin node needs python3"):
        verdict("root@h:22", 127, "", "bash: line 1: python3: command not found\n")


# -- the real gate script, against fake monitors ------------------------------------------------


def run_script(tmp_path: Path, status: dict[str, Any], pools: list[dict[str, Any]], pg_num: int = 32, detail: dict[str, Any] | None = None) -> Result:
    answers = {
        '{"prefix": "status", "format": "json"}': (0, json.dumps(status)),
        '{"prefix": "health", "detail": "detail", "format": "json"}': (0, json.dumps(detail or {})),
        '{"prefix": "osd pool ls", "detail": "detail", "format": "json"}': (0, json.dumps(pools)),
        '{"prefix": "config get", "who": "mon", "key": "mon_max_pg_per_osd"}': (0, "250\n"),
    }
    done = subprocess.run(
        [sys.executable, "-", "rbd-pool", str(pg_num), "3"],
        input=gate_script(),
        capture_output=True,
        text=True,
        env=fake_monitors(tmp_path, answers),
        timeout=60,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def status(health: str = "HEALTH_OK", up: int = 3, checks: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "health": {"status": health, "checks": checks or {}},
        "osdmap": {"num_osds": 3, "num_up_osds": up, "num_in_osds": 3},
        "monmap": {"num_mons": 3},
        "quorum_names": ["a", "b", "c"],
    }


def test_the_real_script_passes_a_healthy_cluster(tmp_path: Path) -> None:
    result = run_script(tmp_path, status(), [])
    assert verdict(WHERE, result.exit_status, result.stdout, result.stderr).startswith("health: HEALTH_OK\n")


def test_the_real_scripts_reasons_reach_the_operator(tmp_path: Path) -> None:
    checks = {"OSD_DOWN": {"summary": {"message": "1 osds down"}}}
    result = run_script(tmp_path, status("HEALTH_WARN", up=2, checks=checks), [], pg_num=512)
    with pytest.raises(OperatorError) as info:
        verdict(WHERE, result.exit_status, result.stdout, result.stderr)
    message = str(info.value)
    assert "health is HEALTH_WARN, not HEALTH_OK (OSD_DOWN: 1 osds down)" in message
    assert "osd: 3 osds: 2 up, 3 in (every OSD must be up and in)" in message
    assert "lower ceph.pool.pgNum (at most 250, as a power of two) or add OSDs" in message
    assert message.endswith("refusing to touch Ceph; fix the cluster (ceph health detail) and run pulumi up again")


APP_NOT_ENABLED = {"POOL_APP_NOT_ENABLED": {"summary": {"message": "1 pool(s) do not have an application enabled"}}}


def app_detail(*pools: str) -> dict[str, Any]:
    """`ceph health detail -f json` as Ceph words it (a pool a line, then the hint)."""
    lines = [{"message": f"application not enabled on pool '{p}'"} for p in pools]
    lines.append({"message": "use 'ceph osd pool application enable <pool-name> <app-name>', where <app-name> is 'cephfs', 'rbd', 'rgw', or freeform"})
    return {"status": "HEALTH_WARN", "checks": {"POOL_APP_NOT_ENABLED": {"detail": lines}}}


def test_the_stacks_own_pool_without_its_application_does_not_stop_the_repair(tmp_path: Path) -> None:
    result = run_script(tmp_path, status("HEALTH_WARN", checks=APP_NOT_ENABLED), [], detail=app_detail("rbd-pool"))
    report = verdict(WHERE, result.exit_status, result.stdout, result.stderr)
    assert report.startswith("health: HEALTH_WARN (POOL_APP_NOT_ENABLED on pool rbd-pool: this stack's own pool, which this run repairs)")


def test_another_pool_without_its_application_still_stops_the_run(tmp_path: Path) -> None:
    result = run_script(tmp_path, status("HEALTH_WARN", checks=APP_NOT_ENABLED), [], detail=app_detail("rbd-pool", "someone-elses"))
    with pytest.raises(OperatorError, match="POOL_APP_NOT_ENABLED: 1 pool"):
        verdict(WHERE, result.exit_status, result.stdout, result.stderr)


def test_the_real_script_names_the_command_the_monitors_refused(tmp_path: Path) -> None:
    env = fake_monitors(tmp_path, {'{"prefix": "status", "format": "json"}': (-13, "")})
    done = subprocess.run([sys.executable, "-", "rbd-pool", "32", "3"], input=gate_script(), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert done.stdout == "ceph health gate: `ceph status` failed (exit 13): command not known\n"
