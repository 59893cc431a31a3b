"""The config model: defaults from the runbook, and every bad input refused with the key, value and rule."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components import config as cfg
from tests.corpus import INVALID
from tests.corpus import set_path as _set
from tests.unit.helpers import TOKEN, valid_raw


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


def test_the_rules_between_keys_are_reported_with_the_field_errors() -> None:
    """A duplicate id and an unknown node are reported in the same run as a bad field of another VM."""
    raw = valid_raw()
    raw["vms"].append({"id": 101, "name": "vm102", "node": "pve-node9", "cores": "many"})
    lines = errors_for(raw).splitlines()
    assert any("vms[1].cores = many: must be a whole number" in line for line in lines), lines
    assert any("vms[1].id = 101: VM ids must be unique" in line for line in lines), lines
    assert any("vms[1].node = pve-node9: must be one of proxmox.nodes" in line for line in lines), lines


def test_a_rule_between_keys_is_not_reported_again_at_a_refused_key() -> None:
    """A node name its field refuses is reported once, by its field, not also as an unknown node."""
    lines = errors_for(_set(valid_raw(), "vms[0].node", "PVE_1")).splitlines()
    assert len([line for line in lines if "vms[0].node" in line]) == 1, lines


def test_digits_as_a_string_are_a_whole_number_and_true_as_a_word_a_boolean() -> None:
    """What `pulumi config set` stores: a number's digits, the words true and false."""
    config = cfg.validate(_set(_set(valid_raw(), "vms[0].id", "101"), "vms[0].ha", "false"))
    assert (config.vms[0].id, config.vms[0].ha) == (101, False)


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
