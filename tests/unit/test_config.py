"""The config model: defaults from the runbook, and every bad input refused with the key, value and rule."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components import config as cfg
from tests.unit.helpers import TOKEN, valid_raw


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set ``a.b[0].c`` in raw config; ``value=DELETE`` removes the key."""
    parts: list[str | int] = []
    for piece in path.replace("]", "").split("."):
        name, *indexes = piece.split("[")
        parts.append(name)
        parts.extend(int(i) for i in indexes)
    target: Any = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return raw


DELETE = object()


def errors_for(raw: dict[str, Any]) -> str:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(raw)
    return str(info.value)


def test_valid_lab_config_is_accepted() -> None:
    config = cfg.validate(valid_raw())
    assert config.ceph.pool.name == "rbd-pool"
    assert config.vms[0].id == 101


def test_runbook_defaults() -> None:
    raw = valid_raw()
    for key in ("pool", "client"):
        del raw["ceph"][key]
    del raw["storage"], raw["ha"]
    config = cfg.validate(raw)
    assert (config.ceph.pool.name, config.ceph.pool.pg_num) == ("rbd-pool", 256)
    assert config.ceph.client.name == "proxmox"
    assert config.ceph.client.caps == "profile-rbd"
    assert config.storage.id == "ceph-rbd"
    assert (config.ha.max_restart, config.ha.max_relocate) == (1, 1)
    assert config.allow_pool_deletion is False
    assert not any(vars(config.adopt).values())


def test_dev_stack_file_matches_the_runbook() -> None:
    with open("Pulumi.dev.yaml", encoding="utf-8") as handle:
        raw = {k.split(":", 1)[1]: v for k, v in yaml.safe_load(handle)["config"].items()}
    config = cfg.validate({**raw, "proxmoxApiToken": TOKEN})
    assert config.ceph.monitors == ["10.10.10.101", "10.10.10.102", "10.10.10.103"]
    assert (config.ceph.pool.name, config.ceph.pool.pg_num) == ("rbd-pool", 256)
    assert [n.name for n in config.proxmox.nodes] == ["pve-node1", "pve-node2", "pve-node3", "pve-node4"]
    assert (config.vms[0].id, config.vms[0].node, config.storage.id) == (101, "pve-node1", "ceph-rbd")


# (key path to break, bad value, the key the message must name, a word of the rule)
INVALID: list[tuple[str, Any, str, str]] = [
    ("ceph.pool.pgNum", 200, "ceph.pool.pgNum", "power of two"),
    ("ceph.pool.pgNum", 0, "ceph.pool.pgNum", ">="),
    ("ceph.pool.pgNum", 65536, "ceph.pool.pgNum", "<="),
    ("ceph.pool.pgNum", "many", "ceph.pool.pgNum", "whole number"),
    ("ceph.pool.size", 0, "ceph.pool.size", ">="),
    ("ceph.pool.autoscaleMode", "maybe", "ceph.pool.autoscaleMode", "one of"),
    ("ceph.pool.name", "Rbd Pool", "ceph.pool.name", "a-z"),
    ("ceph.pool.name", "", "ceph.pool.name", "a-z"),
    ("ceph.pool.name", "-rbd", "ceph.pool.name", "a-z"),
    ("ceph.client.name", "client.proxmox", "ceph.client.name", "client."),
    ("ceph.client.caps", "admin", "ceph.client.caps", "one of"),
    ("ceph.monitors", [], "ceph.monitors", "empty"),
    ("ceph.monitors", ["10.10.10.101", "10.10.10.101"], "ceph.monitors", "once"),
    ("ceph.monitors[0]", "10.10.10.300", "ceph.monitors[0]", "IP address"),
    ("ceph.admin.host", "ceph admin", "ceph.admin.host", "IP address"),
    ("ceph.admin.port", 70000, "ceph.admin.port", "<="),
    ("ceph.admin.user", "Root User", "ceph.admin.user", "user name"),
    ("ceph.admin", DELETE, "ceph.admin", "required"),
    ("ceph.scrubWindow.beginHour", 24, "ceph.scrubWindow.beginHour", "<="),
    ("ceph.scrubWindow.endHour", 22, "ceph.scrubWindow", "differ"),
    ("ceph.pool.pgnum", 64, "ceph.pool.pgnum", "not a known key"),
    ("proxmox.endpoint", "http://10.10.10.11:8006", "proxmox.endpoint", "https"),
    ("proxmox.nodes", [], "proxmox.nodes", "empty"),
    ("proxmox.nodes[0].name", "PVE_node1", "proxmox.nodes[0].name", "node name"),
    ("proxmox.nodes[1].name", "pve-node1", "proxmox.nodes", "unique"),
    ("proxmox.nodes[0].address", "10.10.10.11;reboot", "proxmox.nodes[0].address", "IP address"),
    ("proxmox.verifyTls", "sometimes", "proxmox.verifyTls", "true or false"),
    ("storage.id", "Ceph RBD", "storage.id", "storage id"),
    ("storage.content", ["rootdir"], "storage.content", "images"),
    ("storage.content", ["backup"], "storage.content", "one of"),
    ("vms[0].id", 99, "vms[0].id", ">="),
    ("vms[0].id", 1_000_000_000, "vms[0].id", "<="),
    ("vms[0].name", "VM 101", "vms[0].name", "DNS name"),
    ("vms[0].node", "pve-node9", "vms[0].node", "proxmox.nodes"),
    ("vms[0].cpuType", "host", "vms[0].cpuType", "host"),
    ("vms[0].iso", "debian.iso", "vms[0].iso", "ISO volume"),
    ("vms[0].bridge", "br 0", "vms[0].bridge", "bridge"),
    ("vms[0].memoryMb", 8, "vms[0].memoryMb", ">="),
    ("vms[0].diskGb", 0, "vms[0].diskGb", ">="),
    ("vms[0].affinity", "nowhere", "vms[0].affinity", "ha.affinities"),
    ("ha.mode", "both", "ha.mode", "one of"),
    ("ha.maxRestart", -1, "ha.maxRestart", ">="),
    ("ha.maxRelocate", 11, "ha.maxRelocate", "<="),
    ("ha.state", "running", "ha.state", "one of"),
    ("ha.affinities[0].nodes", {"pve-node7": 1}, "ha.affinities[0].nodes.pve-node7", "proxmox.nodes"),
    ("ha.affinities[0].name", "X", "ha.affinities[0].name", "a-z"),
    ("adopt.pool", "yes please", "adopt.pool", "true or false"),
    ("allowPoolDeletion", "perhaps", "allowPoolDeletion", "true or false"),
    ("proxmoxApiToken", "root@pam:password", "proxmoxApiToken", "API token"),
    ("proxmoxApiToken", DELETE, "proxmoxApiToken", "required"),
]


@pytest.mark.parametrize(("path", "value", "key", "rule"), INVALID, ids=[f"{p}={v!r}"[:60] for p, v, _, _ in INVALID])
def test_invalid_config_is_rejected_naming_the_key(path: str, value: Any, key: str, rule: str) -> None:
    message = errors_for(_set(valid_raw(), path, value))
    line = next((line for line in message.splitlines() if f"pve-ceph-ha:{key}" in line), None)
    assert line is not None, message
    assert rule in line, line
    assert line.startswith("config error: pve-ceph-ha:")


def test_corpus_has_at_least_forty_cases() -> None:
    assert len(INVALID) >= 40


def test_two_ha_cpu_types_are_rejected() -> None:
    raw = valid_raw()
    raw["vms"].append({"id": 102, "name": "vm102", "node": "pve-node2", "cpuType": "x86-64-v3"})
    assert "one CPU type" in errors_for(raw)


def test_duplicate_vm_ids_are_rejected() -> None:
    raw = valid_raw()
    raw["vms"].append({"id": 101, "name": "vm102", "node": "pve-node2"})
    assert "pve-ceph-ha:vms[1].id = 101: VM ids must be unique" in errors_for(raw)


def test_a_bad_token_is_never_shown() -> None:
    secret = "root@pam!pulumi=" + "s3cr3t" * 3 + "!!"
    message = errors_for({**valid_raw(), "proxmoxApiToken": secret})
    assert "s3cr3t" not in message
    assert "pve-ceph-ha:proxmoxApiToken = <secret>" in message


def test_a_bad_ssh_key_value_is_never_shown() -> None:
    message = errors_for({**valid_raw(), "sshPrivateKey": {"not": "a string"}})
    assert "not" not in message.split("=", 1)[1].split(":", 1)[0]
    assert "pve-ceph-ha:sshPrivateKey = <secret>" in message


def test_every_problem_is_reported_at_once() -> None:
    raw = _set(_set(valid_raw(), "ceph.pool.pgNum", 100), "storage.id", "X")
    assert len(errors_for(raw).splitlines()) == 2


def test_runbook_caps_warn_about_the_blocklist() -> None:
    config = cfg.validate(_set(valid_raw(), "ceph.client.caps", "runbook"))
    assert any("blocklist" in w for w in cfg.warnings(config))


def test_default_caps_do_not_warn() -> None:
    assert not cfg.warnings(cfg.validate(valid_raw()))


def test_a_stack_without_any_secret_names_the_missing_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine may pass no secret-key list at all (null): still a config error, never a TypeError."""
    import json

    raw = valid_raw()
    del raw["proxmoxApiToken"]
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"pve-ceph-ha:{k}": json.dumps(v) for k, v in raw.items()}))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", "null")
    with pytest.raises(cfg.ConfigError, match="pve-ceph-ha:proxmoxApiToken"):
        cfg.load_from_pulumi()


def test_a_malformed_plaintext_token_gets_both_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    raw = {**valid_raw(), "proxmoxApiToken": "root@pam:password"}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"pve-ceph-ha:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", "[]")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load_from_pulumi()
    assert "API token" in str(info.value) and "plain text" in str(info.value) and "password" not in str(info.value)


@pytest.mark.parametrize("value", ["vm\rreboot", "vm\x1b[2Jx", "vm\x00x", "vm\nx"])
def test_a_control_character_in_a_refused_value_is_shown_escaped(value: str) -> None:
    raw = _set(valid_raw(), "vms[0].name", value)
    message = errors_for(raw)
    assert repr(value) in message and value not in message, message
