"""The drill's parts without a cluster: the isolate script (run with recording stand-ins for
iptables and systemd-run), the plan's parsing, the watch's milestones, the report's schema,
the preview check and the command line's errors."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest

from drill import cli, faults, preview, report, sources, watch
from drill.faults import Fault, FaultError
from drill.plan import Plan, VmPlace, _disks, _monitors
from drill.sources import Vm

NETS = ["10.10.10.12/32", "10.10.10.13/32", "fd00::101/128"]

# ---------------------------------------------------------------------- the isolate script


def _recorder(folder: Path, *names: str) -> Path:
    """Stand-ins for NAMES that append their argv to folder/calls (fields split by \\x1f, a call a line)."""
    folder.mkdir(exist_ok=True)
    for name in names:
        tool = folder / name
        # one write a call: a background call (nohup ... &) must not interleave with the next one
        tool.write_text(f'#!/bin/sh\nline=$(printf \'%s\\037\' "${{0##*/}}" "$@")\nprintf \'%s\\n\' "$line" >> {folder}/calls\n')
        tool.chmod(0o755)
    return folder


def _calls(folder: Path) -> list[list[str]]:
    return [line.rstrip("\x1f").split("\x1f") for line in (folder / "calls").read_text().splitlines()]


def _run(script: str, path: str) -> list[list[str]]:
    subprocess.run(["/bin/sh", "-s"], input=script, text=True, check=True, env={"PATH": path})
    return _calls(Path(path.split(":")[0]))


def test_isolate_schedules_its_own_removal_before_any_rule(tmp_path):
    bin_ = _recorder(tmp_path / "bin", "iptables", "ip6tables", "systemd-run")
    calls = _run(faults.isolate_script(NETS, 300, 1700000000), f"{bin_}:/usr/bin:/bin")
    assert calls[0][:4] == ["systemd-run", "--quiet", "--unit=pveceph-drill-heal-1700000000", "--on-active=300s"]
    first_rule = next(i for i, c in enumerate(calls) if c[1:2] == ["-A"])
    assert all(c[0] != "systemd-run" for c in calls[first_rule:])


def test_isolate_drops_traffic_with_each_peer_both_ways_sparing_loopback(tmp_path):
    bin_ = _recorder(tmp_path / "bin", "iptables", "ip6tables", "systemd-run")
    rules = [c for c in _run(faults.isolate_script(NETS, 300, 1), f"{bin_}:/usr/bin:/bin") if c[1:2] == ["-A"]]
    assert ["iptables", "-A", "PVECEPH_DRILL_IN", "!", "-i", "lo", "-s", "10.10.10.12/32", "-j", "DROP"] in rules
    assert ["iptables", "-A", "PVECEPH_DRILL_OUT", "!", "-o", "lo", "-d", "10.10.10.13/32", "-j", "DROP"] in rules
    assert ["ip6tables", "-A", "PVECEPH_DRILL_IN", "!", "-i", "lo", "-s", "fd00::101/128", "-j", "DROP"] in rules
    assert len(rules) == 2 * len(NETS)


def test_the_scheduled_heal_removes_every_rule(tmp_path):
    bin_ = _recorder(tmp_path / "bin", "iptables", "ip6tables", "systemd-run")
    calls = _run(faults.isolate_script(NETS, 300, 1), f"{bin_}:/usr/bin:/bin")
    heal = calls[0][-1]  # systemd-run ... /bin/sh -c HEAL
    (bin_ / "calls").unlink()
    healed = _run(heal, f"{bin_}:/usr/bin:/bin")
    for tool in ("iptables", "ip6tables"):
        assert [tool, "-D", "INPUT", "-j", "PVECEPH_DRILL_IN"] in healed and [tool, "-X", "PVECEPH_DRILL_OUT"] in healed


def test_isolate_falls_back_to_a_background_sleep_without_systemd(tmp_path):
    bin_ = _recorder(tmp_path / "bin", "iptables", "ip6tables", "nohup")
    _run(faults.isolate_script(NETS[:1], 120, 1), str(bin_))  # no systemd-run on PATH
    deadline = time.monotonic() + 5
    while not (nohup := [c for c in _calls(bin_) if c[0] == "nohup"]) and time.monotonic() < deadline:
        time.sleep(0.05)  # nohup runs in the background
    assert nohup and nohup[0][1:3] == ["/bin/sh", "-c"] and nohup[0][3].startswith("sleep 120; ")


def test_isolate_refuses_nothing_to_cut_and_unbounded_times():
    with pytest.raises(FaultError, match="no peer address"):
        faults.isolate_script([], 300, 1)
    with pytest.raises(FaultError, match="between 10 and 3600"):
        faults.isolate_script(NETS, 86400, 1)


def test_isolate_peers_are_the_other_nodes_and_the_monitors_as_addresses():
    plan = Plan("pve-node1", "pve-node2", None, {}, True, [], [], ["10.10.10.101", "mon3.example"], {"pve-node1": "10.0.0.1", "pve-node2": "10.0.0.2"})
    assert faults.peers(plan, Fault("isolate", isolate_nets=("10.20.0.0/24",))) == ["10.0.0.2/32", "10.10.10.101/32", "10.20.0.0/24"]


# ---------------------------------------------------------------------- the plan's parsing


def test_disks_are_the_drives_that_are_not_cdroms():
    config = {
        "scsi0": "ceph-rbd:vm-101-disk-0,cache=writeback",
        "ide2": "local:iso/debian-12.iso,media=cdrom",
        "efidisk0": "local-lvm:vm-101-disk-1",
        "net0": "virtio=x",
    }
    assert _disks(config) == {"efidisk0": "local-lvm", "scsi0": "ceph-rbd"}


@pytest.mark.parametrize(
    "monhost, addresses",
    [
        ("10.0.0.1 10.0.0.2", ["10.0.0.1", "10.0.0.2"]),
        ("[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789]", ["10.0.0.1", "10.0.0.2"]),
        ("10.0.0.1:6789;10.0.0.3", ["10.0.0.1", "10.0.0.3"]),
        ("[fd00::1]:6789 fd00::2", ["fd00::1", "fd00::2"]),
    ],
)
def test_monitor_addresses_from_any_monhost_form(monhost, addresses):
    assert _monitors(monhost) == addresses


# ---------------------------------------------------------------------- the watch


def _snap(node1_online: bool, ha: str, svc_node: str, state: str, crm: str, vm: tuple[str, str]) -> watch.Snapshot:
    status = f"vm:101 ({svc_node}, {state})"
    return watch.Snapshot(
        nodes_online={"pve-node1": node1_online, "pve-node2": True},
        ha_nodes={"pve-node1": ha, "pve-node2": "online"},
        services={"vm:101": {"sid": "vm:101", "node": svc_node, "state": state, "crm_state": crm, "status": status}},
        vms={101: vm},
        quorate=True,
    )


def test_milestones_follow_the_ha_managers_states():
    p = watch.Progress(Vm(101), "pve-node1")
    steps = [
        (1.0, _snap(False, "unknown", "pve-node1", "started", "started", ("pve-node1", "stopped"))),
        (7.0, _snap(False, "fence", "pve-node1", "fence", "fence", ("pve-node1", "stopped"))),
        (13.0, _snap(False, "unknown", "pve-node2", "starting", "started", ("pve-node2", "stopped"))),
        (30.0, _snap(False, "unknown", "pve-node2", "started", "started", ("pve-node2", "running"))),
    ]
    lines = [watch.advance(p, snap, t, "pve-node1") for t, snap in steps]
    assert (p.detected, p.fenced, p.running, p.node) == (1.0, 13.0, 30.0, "pve-node2")
    assert lines == [None, None, None, "vm:101 started on pve-node2"]


def test_changes_are_printed_in_pves_words():
    before = _snap(True, "online", "pve-node1", "started", "started", ("pve-node1", "running"))
    after = _snap(False, "unknown", "pve-node1", "fence", "fence", ("pve-node1", "stopped"))
    assert watch.changes(before, after) == [
        "pve-node1: offline (cluster/resources)",
        "node 'pve-node1': state changed from 'online' => 'unknown'",
        "vm:101 (pve-node1, fence)",
        "VM 101: stopped on pve-node1",
    ]


# ---------------------------------------------------------------------- the report


def _report() -> dict:
    plan = Plan("pve-node1", "pve-node2", "https://x:8006", {"pve-node1": True}, True, [VmPlace(Vm(101, "vm101"), "pve-node1")], [], [], {})
    p = watch.Progress(Vm(101, "vm101"), "pve-node1", 0.4, 12.1, 30.2, 1.7e9, "pve-node2", "vm:101 (pve-node2, started)")
    events = [watch.Event(0.0, "poweroff sent"), watch.Event(30.2, "vm:101 started on pve-node2")]
    return report.build("recovered", plan, method="lab", fault="poweroff", deadline=120, message="HA works", progress=[p], events=events, injected_at=1.7e9)


def test_a_report_matches_the_schema():
    assert report.problems(_report()) == []


@pytest.mark.parametrize(
    "breakage, found",
    [
        (lambda r: r.pop("outcome"), "$: 'outcome' is required"),
        (lambda r: r["vms"][0].update(running_s="30"), "$.vms[0].running_s"),
        (lambda r: r.update(outcome="maybe"), "$.outcome: 'maybe' is not one of"),
        (lambda r: r.update(extra=1), "$: 'extra' is not allowed"),
        (lambda r: r["vms"][0].update(recovered=1), "$.vms[0].recovered"),
    ],
)
def test_the_schema_check_catches_a_broken_report(breakage, found):
    broken = _report()
    breakage(broken)
    assert any(found in p for p in report.problems(broken))


def test_the_schema_is_a_valid_json_schema_and_agrees():
    jsonschema.Draft202012Validator.check_schema(report.schema())
    jsonschema.validate(_report(), report.schema())


# ---------------------------------------------------------------------- the preview after the failover


def _fake_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, output: str) -> None:
    (tmp_path / "pulumi").write_text(f'#!/bin/sh\necho {shlex.quote(output)}\necho "$@" > {tmp_path}/args\nexit {code}\n')
    (tmp_path / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def test_preview_passes_when_pulumi_expects_no_changes(tmp_path, monkeypatch):
    _fake_pulumi(tmp_path, monkeypatch, 0, "Resources: 12 unchanged")
    assert preview.check(str(tmp_path), "dev") == (True, "pulumi preview -s dev: no changes after the failover")
    assert (tmp_path / "args").read_text().split() == ["preview", "--expect-no-changes", "--non-interactive", "-s", "dev"]


def test_preview_fails_with_pulumis_words_when_something_would_change(tmp_path, monkeypatch):
    _fake_pulumi(tmp_path, monkeypatch, 255, "error: no changes were expected but changes were proposed")
    ok, message = preview.check(str(tmp_path), "dev")
    assert not ok and "no changes were expected but changes were proposed" in message


# ---------------------------------------------------------------------- where the cluster comes from


def _args(**values) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(cli.parser().parse_args([])), **values})


def test_stack_outputs_and_config_give_the_nodes_and_the_ha_vms(tmp_path):
    (tmp_path / "outputs.json").write_text(
        json.dumps({"vms": [{"id": 101, "name": "vm101", "initialNode": "pve-node1", "haSid": "vm:101"}, {"id": 102, "name": "x", "haSid": None}]})
    )
    (tmp_path / "Pulumi.dev.yaml").write_text(
        "config:\n  pve-ceph-ha:proxmox:\n    endpoint: https://10.0.0.11:8006\n    caFile: ca.pem\n"
        "    nodes:\n      - {name: pve-node1, address: 10.0.0.11}\n      - {name: pve-node2, address: 10.0.0.12, sshPort: 2222}\n"
        "  pve-ceph-ha:ssh:\n    knownHostsFile: kh\n"
    )
    (tmp_path / "token").write_text("root@pam!drill=abc\n")
    cluster = sources.resolve(
        _args(stack_outputs=str(tmp_path / "outputs.json"), stack_config=str(tmp_path / "Pulumi.dev.yaml"), token_file=str(tmp_path / "token"))
    )
    assert cluster.vms == [Vm(101, "vm101")] and cluster.token == "root@pam!drill=abc"
    assert cluster.nodes["pve-node2"] == sources.Node("pve-node2", "https://10.0.0.12:8006", "10.0.0.12", 2222)
    assert cluster.ca_file == str(tmp_path / "ca.pem") and cluster.known_hosts_file == str(tmp_path / "kh")


def test_flags_win_over_the_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("PVE_TOKEN", "root@pam!drill=abc")
    (tmp_path / "outputs.json").write_text(json.dumps({"vms": [{"id": 101, "haSid": "vm:101"}]}))
    cluster = sources.resolve(
        _args(
            stack_outputs=str(tmp_path / "outputs.json"),
            endpoint="https://10.9.9.9:8006",
            token_env="PVE_TOKEN",
            vm=[105],
            node_ssh=["pve-node1=10.9.9.1:2200"],
        )
    )
    assert cluster.endpoint == "https://10.9.9.9:8006" and cluster.vms == [Vm(105)]
    assert cluster.nodes["pve-node1"].ssh_host == "10.9.9.1" and cluster.nodes["pve-node1"].ssh_port == 2200


def test_without_a_cluster_the_drill_says_what_to_give_and_exits_2(capsys):
    assert cli.main(["--vm", "101"]) == 2
    out = capsys.readouterr().out
    assert "no PVE API endpoint: give --endpoint" in out and "Traceback" not in out


def test_json_errors_are_reports_too(capsys):
    assert cli.main(["--vm", "101", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "error" and report.problems(data) == []


def test_a_new_ha_master_is_named():
    before = _snap(True, "online", "pve-node1", "started", "started", ("pve-node1", "running"))
    after = _snap(True, "online", "pve-node1", "started", "started", ("pve-node1", "running"))
    before.master, after.master = "pve-node1", "pve-node2"
    assert watch.changes(before, after) == ["master pve-node2 (was pve-node1: a new master takes over once the old one's lock expires)"]
